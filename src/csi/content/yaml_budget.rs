//! A YAML document as a [`serde_yaml_ng::Value`], built under a node budget: aliases are
//! expanded by the parser as it replays their events, so a secret of a few kilobytes can
//! stand for millions of nodes (one anchor of n values and m aliases to it is n × m). The
//! visitor counts every node it builds and stops the parse past the budget, before the
//! memory is spent.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::{Mapping, Number, Value};

/// Nodes a document may have per byte of its text, and at least.
const NODES_PER_BYTE: usize = 2;
const MIN_NODES: usize = 4096;

/// The error text the budget stops the parse with.
pub(super) const OVER_BUDGET: &str = "the document expands to more values than its size allows";

/// Parses `content` into a value of at most `2 × len + 4096` nodes.
pub(super) fn parse(content: &[u8]) -> Result<Value, serde_yaml_ng::Error> {
    let budget = Cell::new(content.len().saturating_mul(NODES_PER_BYTE).max(MIN_NODES));
    let deserializer = serde_yaml_ng::Deserializer::from_slice(content);
    Budgeted { budget: &budget }.deserialize(deserializer)
}

#[derive(Clone, Copy)]
struct Budgeted<'b> {
    budget: &'b Cell<usize>,
}

impl Budgeted<'_> {
    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(OVER_BUDGET)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Number(Number::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Number(Number::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Number(Number::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // A tagged value (`!secret x`): the tag, and the value under the same budget.
        use serde::de::VariantAccess as _;
        self.spend()?;
        let (tag, contents): (String, _) = data.variant()?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(serde_yaml_ng::value::TaggedValue {
            tag: serde_yaml_ng::value::Tag::new(tag),
            value,
        })))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut out = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Mapping(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_parse_as_values() {
        let v = parse(b"a: [1, two, {b: true}]\nc: null\n").unwrap();
        assert_eq!(v["a"][1], Value::String("two".into()));
        assert_eq!(v["a"][2]["b"], Value::Bool(true));
        assert_eq!(v["c"], Value::Null);
        // Aliases within the budget expand as usual.
        let v = parse(b"base: &b {x: 1}\ncopy: *b\n").unwrap();
        assert_eq!(v["copy"]["x"], Value::Number(1.into()));
    }

    #[test]
    fn quadratic_and_exponential_alias_expansion_stop_at_the_budget() {
        // One anchor of 1,000 values, aliased 1,000 times: about 8 KB of text, a million
        // values expanded.
        let mut doc = String::from("a: &a [");
        doc.push_str(&vec!["1"; 1000].join(","));
        doc.push_str("]\nb: [");
        doc.push_str(&vec!["*a"; 1000].join(","));
        doc.push_str("]\n");
        assert!(doc.len() < 10_000);
        let err = parse(doc.as_bytes()).unwrap_err();
        assert!(err.to_string().contains(OVER_BUDGET), "{err}");
        // "Billion laughs".
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{p}"); 10].join(", ")
            ));
        }
        assert!(parse(doc.as_bytes()).is_err());
    }
}
