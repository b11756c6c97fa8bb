//! The request's query string, decoded once (application/x-www-form-urlencoded, as Go's
//! `url.ParseQuery`) and shared by authorization and every handler.
//!
//! Every single-valued parameter reads the **first** value, as Go's `url.Values.Get`
//! and apimachinery's query-parameter conversion do, so the attributes a
//! SubjectAccessReview is asked about are exactly the ones the handler applies (a
//! repeated `fieldSelector` can never be authorized as one value and served as another).

/// The decoded query parameters of one request, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes a raw query string (`None` when the URI has none). `+` is a space,
    /// `%XX` a byte; invalid escapes stay literal and invalid UTF-8 is replaced.
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { pairs }
    }

    /// A query of already decoded pairs (tests, benches, internal callers).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Query {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The first value of `key` (Go's `url.Values.Get`, which returns `""` for a
    /// missing key; here `None`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when `key` appears at all (with any value, even empty).
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// Every value of a multi-valued parameter (`exclude` of the health checks), in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every decoded pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The first `watch` value turns a list into a watch unless it is `0` or
    /// `false` (any case), as apimachinery's bool conversion has it (`watch=` is true).
    pub fn is_watch(&self) -> bool {
        self.get("watch").is_some_and(is_watch_value)
    }
}

/// True when a `watch` query value turns a list into a watch (apimachinery's
/// `Convert_Slice_string_To_bool`: anything but `0` and case-insensitive `false`).
pub fn is_watch_value(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_urlencoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb&limit=500&x&a+b=c+d%2Ce%zz"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert_eq!(q.get("limit"), Some("500"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(q.get("a b"), Some("c d,e%zz"));
        assert_eq!(q.get("missing"), None);
        assert!(Query::parse(None).pairs().is_empty());
        assert!(Query::parse(Some("")).pairs().is_empty());
    }

    #[test]
    fn first_value_wins() {
        let q = Query::parse(Some(
            "fieldSelector=metadata.name%3Dallowed&fieldSelector=&exclude=a&exclude=b",
        ));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=allowed"));
        assert_eq!(q.all("exclude").collect::<Vec<_>>(), ["a", "b"]);
        let q = Query::parse(Some("fieldSelector=&fieldSelector=metadata.name%3Dx"));
        assert_eq!(q.get("fieldSelector"), Some(""));
    }

    #[test]
    fn watch_values() {
        for (raw, want) in [
            ("watch=true", true),
            ("watch=1", true),
            ("watch=", true),
            ("watch", true),
            ("watch=0", false),
            ("watch=false", false),
            ("watch=FALSE", false),
            ("watch=false&watch=true", false),
            ("watch=true&watch=false", true),
            ("", false),
        ] {
            assert_eq!(Query::parse(Some(raw)).is_watch(), want, "{raw}");
        }
    }
}
