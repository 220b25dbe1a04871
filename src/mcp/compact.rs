//! Keeps `tools/list` small (DESIGN §5: the whole list for an owner stays
//! under about 6,000 tokens).
//!
//! Input schemas keep every parameter with its type, enum, bounds, default
//! and description; they lose only noise: `$schema`, integer `format`s and
//! the descriptions of shared `$defs` (the parameter describes itself).
//!
//! Output schemas describe the result's top level: each field with its
//! type (and enum values), nested objects and arrays as bare `object` /
//! `array`. The model reads results by field name and `summary`; the full
//! nested shapes are in `schemas/` for client authors. The annotations
//! keep their four hints; their `title` repeats the tool's own and goes.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool};
use serde_json::{Map, Value};

/// Compacts one tool definition in place.
pub fn compact_tool(tool: &mut Tool) {
    tool.input_schema = Arc::new(compact_input(&tool.input_schema));
    if let Some(out) = &tool.output_schema {
        tool.output_schema = Some(Arc::new(compact_output(out)));
    }
    if let Some(a) = tool.annotations.as_mut() {
        if tool.title.is_some() {
            a.title = None;
        }
    }
}

fn compact_input(schema: &JsonObject) -> JsonObject {
    let mut v = Value::Object(schema.clone());
    node(&mut v, false);
    optional_not_null(&mut v);
    // Shared definitions (the Environment enum) are inlined: a `$defs`
    // block plus a `$ref` is longer than the enum itself.
    if let Some(Value::Object(defs)) = v.get("$defs").cloned() {
        if let Some(Value::Object(props)) = v.get_mut("properties") {
            for prop in props.values_mut() {
                inline_ref(prop, &defs);
            }
        }
        if !v.to_string().contains("\"$ref\"") {
            if let Value::Object(o) = &mut v {
                o.remove("$defs");
            }
        }
    }
    match v {
        Value::Object(o) => o,
        _ => unreachable!("an object stays an object"),
    }
}

/// An optional parameter is shown as its plain type: leaving it out is how
/// a caller says "none" (null is still accepted). `"default": null`, the
/// null alternative, the `false`, `[]` and `{}` defaults of flags, lists and
/// maps (what leaving them out means anyway) and the `"minimum": 0` of
/// unsigned counts (their descriptions give the real range) go, and so does
/// `additionalProperties: false`: the server refuses unknown parameters
/// with a clear error either way (serde `deny_unknown_fields`).
fn optional_not_null(v: &mut Value) {
    let Value::Object(o) = v else { return };
    o.remove("additionalProperties");
    let required: Vec<Value> = o
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(Value::Object(props)) = o.get_mut("properties") else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if required.contains(&Value::from(name.as_str())) {
            continue;
        }
        let Value::Object(p) = prop else { continue };
        if p.get("default").is_some_and(|d| {
            d.is_null()
                || d == &Value::Bool(false)
                || d.as_array().is_some_and(Vec::is_empty)
                || d.as_object().is_some_and(Map::is_empty)
        }) {
            p.remove("default");
        }
        if p.get("minimum").is_some_and(|m| m == &Value::from(0)) {
            p.remove("minimum");
        }
        if let Some(Value::Array(types)) = p.get("type").cloned() {
            let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
            if rest.len() == 1 {
                p.insert("type".into(), rest[0].clone());
            }
        }
        if let Some(Value::Array(values)) = p.get_mut("enum") {
            values.retain(|x| !x.is_null());
        }
        if let Some(Value::Array(alts)) = p.get("anyOf").cloned() {
            let rest: Vec<Value> = alts
                .into_iter()
                .filter(|a| a.get("type").is_none_or(|t| t != "null"))
                .collect();
            if let [Value::Object(only)] = rest.as_slice() {
                p.remove("anyOf");
                for (k, x) in only {
                    if !p.contains_key(k) {
                        p.insert(k.clone(), x.clone());
                    }
                }
            }
        }
    }
}

/// Replaces `{"$ref": "#/$defs/X", ...}` by X's schema (without its own
/// description) merged with the property's other keywords.
fn inline_ref(prop: &mut Value, defs: &Map<String, Value>) {
    let Some(Value::Object(def)) = prop
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .cloned()
    else {
        return;
    };
    if let Value::Object(o) = prop {
        o.remove("$ref");
        for (k, v) in def {
            if k != "description" && !o.contains_key(&k) {
                o.insert(k, v);
            }
        }
    }
}

/// The top-level shape of an output schema.
fn compact_output(schema: &JsonObject) -> JsonObject {
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert("type".into(), Value::from("object"));
    if let Some(Value::Object(props)) = schema.get("properties") {
        let mut shaped = Map::new();
        for (name, prop) in props {
            shaped.insert(name.clone(), shape(prop, &defs));
        }
        out.insert("properties".into(), Value::Object(shaped));
        if props.contains_key("summary") {
            out.insert("required".into(), Value::from(vec!["summary"]));
        }
    }
    out
}

/// A field's type (and enum), resolving `$ref` and `anyOf` with null.
fn shape(prop: &Value, defs: &Map<String, Value>) -> Value {
    let resolved = resolve(prop, defs);
    let mut types: Vec<Value> = Vec::new();
    let mut enumeration: Option<Value> = None;
    let mut add = |v: &Value, types: &mut Vec<Value>| {
        let v = resolve(v, defs);
        if let Some(e) = v.get("enum") {
            enumeration = Some(e.clone());
        }
        let ty = match v.get("type") {
            Some(Value::Array(ts)) => ts.clone(),
            Some(t) => vec![t.clone()],
            None if v.get("enum").is_some() || v.get("oneOf").is_some() => {
                vec![Value::from("string")]
            }
            None => vec![],
        };
        for t in ty {
            if !types.contains(&t) {
                types.push(t);
            }
        }
    };
    match resolved.get("anyOf").or_else(|| resolved.get("oneOf")) {
        Some(Value::Array(alts)) if resolved.get("type").is_none() => {
            for a in alts {
                add(a, &mut types);
            }
        }
        _ => add(&resolved, &mut types),
    }
    if enumeration.is_none() {
        if let Some(Value::Array(alts)) = resolved.get("oneOf") {
            let consts: Option<Vec<Value>> = alts.iter().map(|a| a.get("const").cloned()).collect();
            enumeration = consts.map(Value::Array);
        }
    }
    let mut m = Map::new();
    match types.len() {
        0 => {}
        1 => {
            m.insert("type".into(), types.remove(0));
        }
        _ => {
            m.insert("type".into(), Value::Array(types));
        }
    }
    if let Some(mut e) = enumeration {
        // A nullable enum field must admit null too.
        if m.get("type").is_some_and(|t| t == "null")
            || m.get("type").is_some_and(|t| {
                t.as_array()
                    .is_some_and(|a| a.contains(&Value::from("null")))
            })
        {
            if let Value::Array(values) = &mut e {
                if !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
            }
        }
        m.insert("enum".into(), e);
    }
    Value::Object(m)
}

fn resolve(v: &Value, defs: &Map<String, Value>) -> Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
        None => v.clone(),
    }
}

/// Visits one schema node; `properties` and `$defs` hold maps of schemas.
fn node(v: &mut Value, drop_descriptions: bool) {
    let Value::Object(o) = v else { return };
    o.remove("$schema");
    if o.get("type").is_some_and(|t| {
        t == "integer"
            || t.as_array()
                .is_some_and(|a| a.contains(&Value::from("integer")))
    }) {
        o.remove("format");
    }
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
    fn output_is_the_top_level_shape_input_keeps_descriptions() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "a field named description"},
                "env": {"$ref": "#/$defs/Environment", "description": "which"},
                "slot": {"anyOf": [{"$ref": "#/$defs/Slot"}, {"type": "null"}]},
                "port": {"type": "integer", "format": "uint16", "minimum": 0, "maximum": 65535},
                "items": {"type": "array", "items": {"$ref": "#/$defs/Slot"}},
                "n": {"type": ["integer", "null"], "format": "int32"}
            },
            "required": ["description", "env"],
            "$defs": {
                "Environment": {"description": "An env.", "oneOf": [
                    {"const": "production", "type": "string", "description": "Live."},
                    {"const": "staging", "type": "string"}
                ]},
                "Slot": {"type": "string", "enum": ["blue", "green"]}
            }
        });
        let obj = schema.as_object().unwrap().clone();
        let out = Value::Object(compact_output(&obj));
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "env": {"type": "string", "enum": ["production", "staging"]},
                    "slot": {"type": ["string", "null"], "enum": ["blue", "green", null]},
                    "port": {"type": "integer"},
                    "items": {"type": "array"},
                    "n": {"type": ["integer", "null"]}
                }
            })
        );
        let input = Value::Object(compact_input(&obj));
        assert_eq!(
            input["properties"]["description"]["description"],
            json!("a field named description")
        );
        assert_eq!(input["properties"]["port"]["maximum"], json!(65535));
        assert!(input["properties"]["port"].get("format").is_none());
        assert_eq!(
            input["properties"]["env"],
            json!({"type": "string", "enum": ["production", "staging"], "description": "which"})
        );
        assert!(input.get("$defs").is_some(), "still referenced from items");
        assert!(input.get("$schema").is_none());
    }
}
