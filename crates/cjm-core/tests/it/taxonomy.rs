use cjm_core::{ErrorCategory, PluginErrorKind};

use crate::errors_fixture;

#[test]
fn each_category_retries_by_default_as_the_reference_does() {
    let fixture = errors_fixture();
    let defaults = fixture["category_retriable_defaults"].as_object().unwrap();
    assert_eq!(defaults.len(), ErrorCategory::ALL.len());
    for category in ErrorCategory::ALL {
        assert_eq!(
            defaults[category.as_str()].as_bool(),
            Some(category.default_retriable()),
            "{category}"
        );
    }
}

#[test]
fn categories_serialise_as_the_reference_strings() {
    for category in ErrorCategory::ALL {
        let json = serde_json::to_string(&category).unwrap();
        assert_eq!(json, format!("\"{category}\""));
        assert_eq!(category.as_str().parse::<ErrorCategory>(), Ok(category));
    }
    let error = "sideways".parse::<ErrorCategory>().unwrap_err();
    assert_eq!(error.to_string(), "unknown error category `sideways`");
}

#[test]
fn every_reference_error_class_has_its_category_retry_default_and_bases() {
    let fixture = errors_fixture();
    let classes = fixture["kinds"].as_array().unwrap();
    assert_eq!(classes.len(), PluginErrorKind::ALL.len());
    for class in classes {
        let name = class["class_name"].as_str().unwrap();
        let kind = PluginErrorKind::from_class_name(name).unwrap();
        assert_eq!(kind.class_name(), name);
        assert_eq!(kind.category().as_str(), class["category"], "{name}");
        assert_eq!(
            kind.default_retriable(),
            class["default_retriable"],
            "{name}"
        );
        assert_eq!(kind.is_value_error(), class["is_value_error"], "{name}");
        let bases: Vec<&str> = PluginErrorKind::ALL
            .into_iter()
            .filter(|&other| kind.is_subclass_of(other))
            .map(PluginErrorKind::class_name)
            .collect();
        let expected: Vec<&str> = class["subclass_of"]
            .as_array()
            .unwrap()
            .iter()
            .map(|base| base.as_str().unwrap())
            .collect();
        assert_eq!(bases, expected, "{name}");
        let parent = kind
            .parent()
            .map_or("PluginError", PluginErrorKind::class_name);
        assert_eq!(class["mro"][1], parent, "{name}");
    }
}
