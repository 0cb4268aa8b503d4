use std::fmt;

use cjm_core::{PluginInstance, PluginMeta, ResourceRequirements};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor},
};
use serde_json::Value;

use crate::time_at;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/metadata.json")).unwrap()
}

/// The top-level keys of a JSON object in the order the text has them, which a
/// `Value` (a sorted map here) forgets.
struct OrderedKeys(Vec<String>);

impl<'de> Deserialize<'de> for OrderedKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = OrderedKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(OrderedKeys(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

fn keys_in_order(text: &str) -> Vec<String> {
    serde_json::from_str::<OrderedKeys>(text).unwrap().0
}

/// Reads a reference record, writes it back, and compares with the reference's
/// own text without its live field: same values, same field order.
#[track_caller]
fn check<T: Serialize + DeserializeOwned>(record: &Value) -> T {
    let parsed: T = serde_json::from_value(record["asdict"].clone()).unwrap();
    let expected = record["compact"].as_str().unwrap();
    let written = serde_json::to_string(&parsed).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&written).unwrap(),
        serde_json::from_str::<Value>(expected).unwrap()
    );
    assert_eq!(keys_in_order(&written), keys_in_order(expected));
    parsed
}

#[test]
fn plugin_meta_reads_and_writes_the_reference_fields() {
    let fixture = fixture();
    let full: PluginMeta = check(&fixture["meta_full"]);
    assert!(full.taxonomy.is_some());
    let defaults: PluginMeta = check(&fixture["meta_defaults"]);
    assert_eq!(defaults, PluginMeta::new("whisper", "1.0.0"));
}

#[test]
fn plugin_meta_needs_only_a_name_and_a_version() {
    let meta: PluginMeta =
        serde_json::from_str(r#"{"name": "whisper", "version": "1.0.0"}"#).unwrap();
    assert_eq!(meta, PluginMeta::new("whisper", "1.0.0"));
    assert!(meta.enabled);
}

#[test]
fn resource_requirements_default_to_nothing_required() {
    let fixture = fixture();
    let defaults: ResourceRequirements = check(&fixture["resources_defaults"]);
    assert_eq!(defaults, ResourceRequirements::default());
    let empty: ResourceRequirements = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, defaults);
}

#[test]
fn plugin_instance_reads_and_writes_the_reference_fields() {
    let fixture = fixture();
    let _: PluginInstance = check(&fixture["instance_full"]);
    let defaults: PluginInstance = check(&fixture["instance_defaults"]);
    let created = time_at(1_795_618_800, 123_456_000);
    assert_eq!(defaults, PluginInstance::new("whisper", "whisper", created));
}
