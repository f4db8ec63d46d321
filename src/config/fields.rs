//! The field tables of every mapping the decoder reads: names (the only
//! keys [`Decoder::map`](super::decode::Decoder::map) accepts), types,
//! whether required, defaults and a line of description. The decoder
//! checks keys against these tables, and `flex-gateway schema` turns the
//! same tables into a JSON Schema (`jsonschema.rs`), so an editor's
//! completion and `validate` cannot name different fields.

/// One field of a mapping.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// What it is, for an editor's hover (may be empty).
    pub doc: &'static str,
    /// The default, as a JSON literal (`"10s"`, `50`, `true`).
    pub default: Option<&'static str>,
}

/// What a field holds.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// Anything: the decoder reads it further (described only).
    Any,
    /// A non-empty string.
    Str,
    /// A non-empty string the decoder parses further (what, for the schema's description).
    Text(&'static str),
    /// A string, number or boolean (read as text).
    Scalar,
    /// A name read as text (YAML numbers too): what, for the description.
    Name(&'static str),
    /// An `http://` or `https://` URL: what, for the description.
    Url(&'static str),
    /// A whole number in `min..=max` (an unquoted YAML integer).
    Int(i64, i64),
    /// A number (integer or decimal) in `min..=max`.
    Number(f64, f64),
    Bool,
    /// `30s`, `1500ms`, `2m`, `1h`, `1m30s`; with `true`, also a bare number of seconds.
    Duration(bool),
    /// Bytes: `1048576`, `512KB`, `10MB`, `1GiB`.
    Size,
    /// One of these strings, exactly.
    Enum(&'static [&'static str]),
    /// One of these strings, in any letter case.
    AnyCase(&'static [&'static str]),
    /// A list of these; with `true`, a single item is accepted as a list of one.
    List(&'static Ty, bool),
    /// A mapping with these fields only.
    Obj(&'static [Field]),
    /// A mapping of free-form keys to values of this type.
    Dict(&'static Ty),
    /// A mapping with these fields only, whose names are in any letter
    /// case (Fluent Bit's parameters).
    AnyCaseKeys(&'static [Field]),
    /// Any of these forms.
    Either(&'static [Ty]),
    /// A Flex policy binding (these fields), whose `config` is the
    /// schema of the policy `policyRef.name` names.
    Binding(&'static [Field]),
    /// A `kind: Gateway` policy list: `- <policy name>: {config}` (+ `order`).
    Policies,
}

/// A field of type `ty`, optional, undocumented.
pub const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        doc: "",
        default: None,
    }
}

impl Field {
    pub const fn req(mut self) -> Field {
        self.required = true;
        self
    }

    pub const fn doc(mut self, doc: &'static str) -> Field {
        self.doc = doc;
        self
    }

    /// The default as a JSON literal.
    pub const fn default(mut self, json: &'static str) -> Field {
        self.default = Some(json);
        self
    }
}

/// Common shapes.
pub const STR: Ty = Ty::Str;
pub const BOOL: Ty = Ty::Bool;
pub const STRS: Ty = Ty::List(&Ty::Str, false);
pub const STRS_OR_ONE: Ty = Ty::List(&Ty::Str, true);
pub const PORT: Ty = Ty::Int(1, 65535);
pub const POSITIVE: Ty = Ty::Int(1, i64::MAX);
pub const DURATION: Ty = Ty::Duration(false);
pub const SECONDS: Ty = Ty::Duration(true);
pub const LABELS: Ty = Ty::Dict(&Ty::Scalar);

/// Something with key names: a field table, or names alone (free-form keys).
pub trait Known {
    fn has(&self, key: &str) -> bool;
    fn names(&self) -> Vec<&str>;
}

impl Known for [Field] {
    fn has(&self, key: &str) -> bool {
        self.iter().any(|f| f.name == key)
    }

    fn names(&self) -> Vec<&str> {
        self.iter().map(|f| f.name).collect()
    }
}

impl Known for [&str] {
    fn has(&self, key: &str) -> bool {
        self.contains(&key)
    }

    fn names(&self) -> Vec<&str> {
        self.to_vec()
    }
}
