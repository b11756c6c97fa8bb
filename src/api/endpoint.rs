//! Generic GET and LIST handling for any [`ResourceProvider`]: selectors, paging,
//! and the JSON / protobuf / Table / PartialObjectMetadata representations.

use std::ops::ControlFlow;

use http::Response;

use super::list_options::{IncludeObject, ListOptions};
use super::meta::write_partial_object_metadata;
use super::negotiate::{Output, Target, negotiate, negotiate_output};
use super::paging::ContinueToken;
use super::protobuf::{Envelope, Writer};
use super::resource::{ApiObject, AsyncBackend, ResourceDescriptor, ResourceProvider};
use super::response::{self, Body};
use super::status::ApiError;

/// Serves `GET .../<resource>/<name>`.
pub fn get(
    provider: &dyn ResourceProvider,
    namespace: Option<&str>,
    name: &str,
    accept: Option<&str>,
    now_ms: i64,
) -> Result<Response<Body>, ApiError> {
    let d = provider.descriptor();
    let output = negotiate_output(
        accept,
        Target::Object,
        !d.columns.is_empty(),
        provider.protobuf(),
    )?;
    let snapshot = provider.snapshot();
    if output == Output::Protobuf {
        let mut env = Envelope::new(512);
        let mut found = false;
        snapshot.get(namespace, name, &mut |obj| {
            found = true;
            obj.write_protobuf(&mut env.body());
        });
        if !found {
            return Err(d.not_found(namespace, name));
        }
        return Ok(response::protobuf(env.finish(&d.group_version(), d.kind)));
    }
    let mut out = Vec::with_capacity(1024);
    let mut found = false;
    snapshot.get(namespace, name, &mut |obj| {
        found = true;
        match output {
            Output::Json => obj.write_json(&mut out),
            Output::Protobuf => {}
            Output::PartialObjectMetadata { version } => {
                write_partial_object_metadata(&mut out, version, obj.meta())
            }
            Output::Table { version } => write_table(
                &mut out,
                d,
                version,
                &TableMeta::default(),
                &[obj],
                IncludeObject::Metadata,
                now_ms,
            ),
            Output::PartialObjectMetadataList { .. } => {}
        }
    });
    if !found {
        return Err(d.not_found(namespace, name));
    }
    Ok(response::json(out))
}

/// The namespace a list visits: the path's, or the one a field selector pins
/// (`metadata.namespace=x` narrows the scan like a namespaced path); `None` is the whole
/// snapshot.
pub fn list_scope<'a>(namespace: Option<&'a str>, opts: &'a ListOptions) -> Option<&'a str> {
    namespace.or(opts.field_selector.required_namespace())
}

/// Serves `GET .../<resource>` (list) with selectors, `limit` and `continue`.
pub fn list(
    provider: &dyn ResourceProvider,
    namespace: Option<&str>,
    opts: &ListOptions,
    accept: Option<&str>,
    now_ms: i64,
) -> Result<Response<Body>, ApiError> {
    let d = provider.descriptor();
    let output = negotiate_output(
        accept,
        Target::List,
        !d.columns.is_empty(),
        provider.protobuf(),
    )?;
    let snapshot = provider.snapshot();
    snapshot.check_list_version(opts)?;
    let rv = snapshot.resource_version().to_string();

    let token = opts
        .continue_token
        .as_deref()
        .map(ContinueToken::decode)
        .transpose()?;
    if let Some(t) = &token
        && t.rv != rv
        && !provider.continue_across_snapshots()
    {
        let resumable = ContinueToken::new(&rv, &t.ns, &t.name).encode();
        return Err(ApiError::continue_expired(Some(resumable)));
    }
    let scope = list_scope(namespace, opts);
    let after = token.as_ref().map(|t| (t.ns.as_str(), t.name.as_str()));
    let filtered = !opts.label_selector.is_empty() || !opts.field_selector.is_empty();

    // Without `limit` there is no continue token or remaining count, so the list head is known
    // up front and every item goes straight into the response buffer: one copy of the body
    // instead of two (a 150,000-pod list is ~65 MB).
    if opts.limit == 0 && token.is_none() {
        let list_meta = TableMeta {
            resource_version: d.lists_have_resource_version.then_some(rv),
            ..TableMeta::default()
        };
        if output == Output::Protobuf {
            let mut env = Envelope::new(64 * 1024);
            let mut w = env.body();
            list_meta.write_protobuf(&mut w);
            snapshot.visit(scope, None, &mut |obj| {
                let meta = obj.meta();
                if opts.label_selector.matches(&meta.labels) && opts.field_selector.matches(meta) {
                    write_protobuf_item(&mut w, obj);
                }
                ControlFlow::Continue(())
            });
            return Ok(response::protobuf(
                env.finish(&d.group_version(), d.list_kind),
            ));
        }
        let mut out = Vec::with_capacity(64 * 1024);
        write_list_head(&mut out, d, output, &list_meta);
        let mut first = true;
        snapshot.visit(scope, None, &mut |obj| {
            let meta = obj.meta();
            if !opts.label_selector.matches(&meta.labels) || !opts.field_selector.matches(meta) {
                return ControlFlow::Continue(());
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_item(&mut out, obj, output, opts.include_object, now_ms);
            ControlFlow::Continue(())
        });
        out.extend_from_slice(b"]}");
        return Ok(response::json(out));
    }

    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut last_key: Option<(String, String)> = None;
    let mut more = false;
    let mut remaining = 0usize;
    snapshot.visit(scope, after, &mut |obj| {
        let meta = obj.meta();
        if !opts.label_selector.matches(&meta.labels) || !opts.field_selector.matches(meta) {
            return ControlFlow::Continue(());
        }
        if opts.limit > 0 && items.len() >= opts.limit {
            more = true;
            if filtered {
                return ControlFlow::Break(());
            }
            remaining += 1;
            return ControlFlow::Continue(());
        }
        let mut buf = Vec::with_capacity(512);
        if output == Output::Protobuf {
            write_protobuf_item(&mut Writer::new(&mut buf), obj);
        } else {
            write_item(&mut buf, obj, output, opts.include_object, now_ms);
        }
        items.push(buf);
        last_key = Some((meta.namespace_or_empty().to_string(), meta.name.clone()));
        ControlFlow::Continue(())
    });

    let continue_token = match (&last_key, more) {
        (Some((ns, name)), true) => Some(ContinueToken::new(&rv, ns, name).encode()),
        _ => None,
    };
    let list_meta = TableMeta {
        resource_version: d.lists_have_resource_version.then_some(rv),
        continue_token,
        remaining_item_count: (more && !filtered).then_some(remaining),
    };
    if output == Output::Protobuf {
        let mut env = Envelope::new(items.iter().map(Vec::len).sum::<usize>() + 256);
        let mut w = env.body();
        list_meta.write_protobuf(&mut w);
        for item in &items {
            w.out.extend_from_slice(item);
        }
        return Ok(response::protobuf(
            env.finish(&d.group_version(), d.list_kind),
        ));
    }
    let mut out = Vec::with_capacity(items.iter().map(Vec::len).sum::<usize>() + 256);
    write_list_head(&mut out, d, output, &list_meta);
    write_joined(&mut out, &items);
    out.extend_from_slice(b"]}");
    Ok(response::json(out))
}

/// Serves `GET .../<resource>/<name>` from an asynchronous backend.
pub async fn get_async(
    d: &'static ResourceDescriptor,
    backend: &dyn AsyncBackend,
    namespace: Option<&str>,
    name: &str,
    accept: Option<&str>,
    now_ms: i64,
) -> Result<Response<Body>, ApiError> {
    let output = negotiate(accept, Target::Object, !d.columns.is_empty())?;
    let Some(obj) = backend.get(namespace, name).await? else {
        return Err(d.not_found(namespace, name));
    };
    let mut out = Vec::with_capacity(1024);
    match output {
        // Negotiated without protobuf: JSON is what it falls back to.
        Output::Json | Output::Protobuf => obj.write_json(&mut out),
        Output::PartialObjectMetadata { version } => {
            write_partial_object_metadata(&mut out, version, obj.meta())
        }
        Output::Table { version } => write_table(
            &mut out,
            d,
            version,
            &TableMeta::default(),
            &[obj.as_ref()],
            IncludeObject::Metadata,
            now_ms,
        ),
        Output::PartialObjectMetadataList { .. } => {}
    }
    Ok(response::json(out))
}

/// Serves `GET .../<resource>` (list) from an asynchronous backend (selectors and
/// paging are the backend's).
pub async fn list_async(
    d: &'static ResourceDescriptor,
    backend: &dyn AsyncBackend,
    namespace: Option<&str>,
    opts: &ListOptions,
    accept: Option<&str>,
    now_ms: i64,
) -> Result<Response<Body>, ApiError> {
    let output = negotiate(accept, Target::List, !d.columns.is_empty())?;
    let page = backend.list(namespace, opts).await?;
    let list_meta = TableMeta {
        resource_version: d
            .lists_have_resource_version
            .then_some(page.resource_version),
        continue_token: page.continue_token,
        remaining_item_count: None,
    };
    let mut out = Vec::with_capacity(page.items.len() * 768 + 256);
    write_list_head(&mut out, d, output, &list_meta);
    for (i, obj) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_item(&mut out, obj.as_ref(), output, opts.include_object, now_ms);
    }
    out.extend_from_slice(b"]}");
    Ok(response::json(out))
}

/// Everything of a list body before its first item (Table rows, or items).
fn write_list_head(
    out: &mut Vec<u8>,
    d: &ResourceDescriptor,
    output: Output,
    list_meta: &TableMeta,
) {
    match output {
        Output::Table { version } => write_table_head(out, d, version, list_meta),
        Output::PartialObjectMetadataList { version } => {
            out.extend_from_slice(
                b"{\"kind\":\"PartialObjectMetadataList\",\"apiVersion\":\"meta.k8s.io/",
            );
            out.extend_from_slice(version.as_bytes());
            out.extend_from_slice(b"\",\"metadata\":");
            list_meta.write(out);
            out.extend_from_slice(b",\"items\":[");
        }
        _ => {
            out.extend_from_slice(b"{\"kind\":\"");
            out.extend_from_slice(d.list_kind.as_bytes());
            out.extend_from_slice(b"\",\"apiVersion\":\"");
            out.extend_from_slice(d.group_version().as_bytes());
            out.extend_from_slice(b"\",\"metadata\":");
            list_meta.write(out);
            out.extend_from_slice(b",\"items\":[");
        }
    }
}

/// One protobuf list item: field 2 (`items`) of a `...List` message.
fn write_protobuf_item(w: &mut Writer<'_>, obj: &dyn ApiObject) {
    // Items are a few hundred bytes: a two-byte length is the usual case.
    w.nested(2, 2, |w| obj.write_protobuf(w));
}

/// One JSON list item (or Table row) in the negotiated representation.
fn write_item(
    out: &mut Vec<u8>,
    obj: &dyn ApiObject,
    output: Output,
    include: IncludeObject,
    now_ms: i64,
) {
    match output {
        Output::Json => obj.write_json_item(out),
        Output::Protobuf => {}
        Output::PartialObjectMetadataList { version } => {
            write_partial_object_metadata(out, version, obj.meta())
        }
        Output::Table { version } => write_row(out, obj, version, include, now_ms),
        Output::PartialObjectMetadata { .. } => {}
    }
}

/// `metav1.ListMeta` fields we fill.
#[derive(Default)]
struct TableMeta {
    resource_version: Option<String>,
    continue_token: Option<String>,
    remaining_item_count: Option<usize>,
}

impl TableMeta {
    /// Field 1 (`metadata`) of a `...List` message.
    fn write_protobuf(&self, w: &mut Writer<'_>) {
        w.list_meta(
            1,
            self.resource_version.as_deref().unwrap_or(""),
            self.continue_token.as_deref().unwrap_or(""),
            self.remaining_item_count.map(|n| n as u64),
        );
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut map = serde_json::Map::new();
        if let Some(rv) = &self.resource_version {
            map.insert("resourceVersion".into(), rv.clone().into());
        }
        if let Some(c) = &self.continue_token {
            map.insert("continue".into(), c.clone().into());
        }
        if let Some(n) = self.remaining_item_count {
            map.insert("remainingItemCount".into(), n.into());
        }
        serde_json::to_writer(&mut *out, &map).expect("list meta serialises");
    }
}

fn write_joined(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
}

fn write_table_head(out: &mut Vec<u8>, d: &ResourceDescriptor, version: &str, meta: &TableMeta) {
    out.extend_from_slice(b"{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/");
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(b"\",\"metadata\":");
    meta.write(out);
    out.extend_from_slice(b",\"columnDefinitions\":");
    serde_json::to_writer(&mut *out, d.columns).expect("columns serialise");
    out.extend_from_slice(b",\"rows\":[");
}

fn write_row(
    out: &mut Vec<u8>,
    obj: &dyn ApiObject,
    version: &str,
    include: IncludeObject,
    now_ms: i64,
) {
    out.extend_from_slice(b"{\"cells\":");
    serde_json::to_writer(&mut *out, &obj.cells(now_ms)).expect("cells serialise");
    out.extend_from_slice(b",\"object\":");
    match include {
        IncludeObject::None => out.extend_from_slice(b"null"),
        IncludeObject::Metadata => write_partial_object_metadata(out, version, obj.meta()),
        IncludeObject::Object => obj.write_json(out),
    }
    out.push(b'}');
}

fn write_table(
    out: &mut Vec<u8>,
    d: &ResourceDescriptor,
    version: &str,
    meta: &TableMeta,
    objects: &[&dyn ApiObject],
    include: IncludeObject,
    now_ms: i64,
) {
    write_table_head(out, d, version, meta);
    for (i, obj) in objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_row(out, *obj, version, include, now_ms);
    }
    out.extend_from_slice(b"]}");
}

/// Writes one object in the negotiated representation of a watch event's `object`.
pub fn write_event_object(
    out: &mut Vec<u8>,
    d: &ResourceDescriptor,
    output: Output,
    obj: &dyn ApiObject,
    include: IncludeObject,
    now_ms: i64,
) {
    match output {
        Output::Json | Output::Protobuf | Output::PartialObjectMetadataList { .. } => {
            obj.write_json(out)
        }
        Output::PartialObjectMetadata { version } => {
            write_partial_object_metadata(out, version, obj.meta())
        }
        Output::Table { version } => write_table(
            out,
            d,
            version,
            &TableMeta::default(),
            &[obj],
            include,
            now_ms,
        ),
    }
}
