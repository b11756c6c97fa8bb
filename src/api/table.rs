//! Server-side `meta.k8s.io` Table output (kubectl's human-readable `get`).

use serde::Serialize;

/// A Table column definition (`metav1.TableColumnDefinition`): every key is always present.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Column {
    /// Column header.
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `name`, `date`, `quantity`, `duration` or `""`.
    pub format: &'static str,
    /// Description shown by `kubectl explain`-like tools.
    pub description: &'static str,
    /// 0 = always shown; >0 = only with `-o wide`.
    pub priority: i32,
}

/// The NAME column every resource starts with.
pub const NAME_COLUMN: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};

/// The AGE column (cells are kubectl-style short durations).
pub const AGE_COLUMN: Column = Column {
    name: "Age",
    type_: "date",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
    priority: 0,
};
