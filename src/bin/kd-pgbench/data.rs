//! The benchmark table: record `i` (0-based, in key order) is `record-JJJ` in namespace
//! `ns-NNNNN`, labelled `app`, `tier` and `bucket` (`bucket=b-K` holds every record with
//! `i % 10,000 == K`, spread over the namespaces: a selective cluster-wide selector).

use std::io::Write;

use crate::Shape;

/// Buckets of the `bucket` label.
pub const BUCKETS: u32 = 10_000;

/// Namespace of namespace index `ns`.
pub fn namespace(ns: u32) -> String {
    format!("ns-{ns:05}")
}

/// Name of record `j` of a namespace.
pub fn name(j: u32) -> String {
    format!("record-{j:03}")
}

/// Records carrying `bucket=b-K`.
pub fn bucket_size(shape: Shape, k: u32) -> usize {
    let n = shape.namespaces as u64 * shape.per_namespace as u64;
    let k = k as u64;
    let b = BUCKETS as u64;
    (n / b + u64::from(k < n % b)) as usize
}

/// Writes every row in COPY text format: namespace, name, labels, data, resource_version.
pub fn write_rows(namespaces: u32, per_namespace: u32) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    const TIERS: [&str; 3] = ["web", "api", "db"];
    for ns in 0..namespaces {
        let namespace = namespace(ns);
        for j in 0..per_namespace {
            let i = ns as u64 * per_namespace as u64 + j as u64;
            writeln!(
                out,
                "{namespace}\t{}\t{{\"app\": \"app-{}\", \"tier\": \"{}\", \"bucket\": \"b-{:04}\"}}\t\
                 {{\"owner\": \"team-{}\", \"value\": \"{i}\", \"endpoint\": \"https://svc-{j}.{namespace}.svc:8443/v1\", \"retries\": \"3\"}}\t1",
                name(j),
                j % 20,
                TIERS[(j % 3) as usize],
                i % BUCKETS as u64,
                ns % 50,
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
