//! Keeps `tools/list` small (DESIGN §5: the whole list for an owner stays
//! under about 6,000 tokens): output schemas lose their descriptions (the
//! model reads results by field name and `summary`), one-of-constants
//! become plain enums, and the default `$schema` dialect is left implicit.
//! Input schemas keep every parameter description.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// Compacts one tool definition in place.
pub fn compact_tool(tool: &mut Tool) {
    tool.input_schema = Arc::new(compact(&tool.input_schema, false));
    if let Some(out) = &tool.output_schema {
        tool.output_schema = Some(Arc::new(compact(out, true)));
    }
}

fn compact(schema: &JsonObject, drop_descriptions: bool) -> JsonObject {
    let mut v = Value::Object(schema.clone());
    node(&mut v, drop_descriptions);
    match v {
        Value::Object(o) => o,
        _ => unreachable!("an object stays an object"),
    }
}

/// Visits one schema node; `properties` and `$defs` hold maps of schemas.
fn node(v: &mut Value, drop_descriptions: bool) {
    let Value::Object(o) = v else { return };
    o.remove("$schema");
    if drop_descriptions && o.get("description").is_some_and(Value::is_string) {
        o.remove("description");
    }
    if let Some(Value::Array(alts)) = o.get("oneOf") {
        let consts: Option<Vec<Value>> = alts.iter().map(|a| a.get("const").cloned()).collect();
        if let Some(consts) = consts {
            if consts.iter().all(Value::is_string) {
                o.remove("oneOf");
                o.insert("type".into(), Value::from("string"));
                o.insert("enum".into(), Value::Array(consts));
            }
        }
    }
    for key in ["properties", "$defs"] {
        if let Some(Value::Object(map)) = o.get_mut(key) {
            for child in map.values_mut() {
                node(child, drop_descriptions);
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(items)) = o.get_mut(key) {
            for child in items {
                node(child, drop_descriptions);
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = o.get_mut(key) {
            node(child, drop_descriptions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_descriptions_go_input_descriptions_stay() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "a field named description"},
                "env": {"$ref": "#/$defs/Environment", "description": "which"}
            },
            "$defs": {"Environment": {"description": "An env.", "oneOf": [
                {"const": "production", "type": "string", "description": "Live."},
                {"const": "staging", "type": "string"}
            ]}}
        });
        let obj = schema.as_object().unwrap().clone();
        let out = Value::Object(compact(&obj, true));
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {"description": {"type": "string"}, "env": {"$ref": "#/$defs/Environment"}},
                "$defs": {"Environment": {"type": "string", "enum": ["production", "staging"]}}
            })
        );
        let input = Value::Object(compact(&obj, false));
        assert_eq!(
            input["properties"]["description"]["description"],
            json!("a field named description")
        );
        assert_eq!(
            input["$defs"]["Environment"]["enum"],
            json!(["production", "staging"])
        );
        assert!(input.get("$schema").is_none());
    }
}
