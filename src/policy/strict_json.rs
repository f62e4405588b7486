//! JSON that refuses duplicate object keys at any depth.
//!
//! `serde_json` keeps the last of two equal keys, so `{"address":"a","address":"b"}` would
//! mean one thing to meshmail and possibly another to a different verifier. A signed document
//! must mean one thing only: a duplicate key makes the whole document invalid.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Deepest nesting accepted; a policy needs three levels.
const MAX_DEPTH: usize = 16;

/// Checks that `bytes` is one JSON value with no duplicate keys and no nesting deeper than
/// [`MAX_DEPTH`]. Returns the reason when it is not.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Walk { depth: 0 }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

struct Walk {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.nested::<A::Error>()?;
        while seq.next_element_seed(Walk { depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.nested::<A::Error>()?;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value_seed(Walk { depth })?;
        }
        Ok(())
    }
}

impl Walk {
    fn nested<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("JSON nested too deeply"));
        }
        Ok(self.depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn duplicates_refused_at_any_depth() {
        assert!(check(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        assert!(check(br#"{"a":1,"a":2}"#)
            .unwrap_err()
            .contains("duplicate key"));
        assert!(check(br#"{"a":{"x":1,"x":1}}"#).is_err());
        assert!(check(br#"{"a":[{"x":1,"x":1}]}"#).is_err());
        assert!(check(br#"{"a":1} trailing"#).is_err());
        assert!(check(&[b'['; 40]).is_err());
    }
}
