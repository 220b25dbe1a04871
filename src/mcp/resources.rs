//! Resources (DESIGN §5): `codeb://projects/{project}/{environment}/slots`
//! and `codeb://deployments/{id}/log`, served as templates.

use rmcp::model::{ResourceContents, ResourceTemplate};
use rmcp::ErrorData;
use serde_json::json;

use crate::model::{validate_project_name, Environment};

/// URI template of a project's slots.
pub const SLOTS_TEMPLATE: &str = "codeb://projects/{project}/{environment}/slots";
/// URI template of a deployment's step journal.
pub const DEPLOYMENT_LOG_TEMPLATE: &str = "codeb://deployments/{id}/log";

/// A parsed resource URI.
#[derive(Debug, PartialEq, Eq)]
pub enum ResourceRef {
    /// A project's slots in one environment.
    Slots {
        /// Project.
        project: String,
        /// Environment.
        environment: Environment,
    },
    /// A deployment's journal.
    DeploymentLog(uuid::Uuid),
}

/// The resource templates.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(SLOTS_TEMPLATE, "project-slots")
            .with_title("Slots of a project environment")
            .with_description("Blue/green slots of one project environment as JSON (same data as slot_status).")
            .with_mime_type("application/json"),
        ResourceTemplate::new(DEPLOYMENT_LOG_TEMPLATE, "deployment-log")
            .with_title("Deployment step journal")
            .with_description("The step journal of one deployment: step, argv, exit status, stderr tail, duration.")
            .with_mime_type("text/plain"),
    ]
}

/// The error for a URI that names nothing.
pub fn not_found(uri: &str, why: &str) -> ErrorData {
    ErrorData::resource_not_found(
        format!("resource not found: {why}"),
        Some(json!({ "uri": uri })),
    )
}

/// Parses a codeb resource URI; input is validated before anything uses it.
pub fn parse(uri: &str) -> Result<ResourceRef, ErrorData> {
    let Some(path) = uri.strip_prefix("codeb://") else {
        return Err(not_found(uri, "codeb serves only codeb:// URIs"));
    };
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["projects", project, env, "slots"] => {
            validate_project_name(project).map_err(|e| not_found(uri, &e.0))?;
            let environment =
                Environment::parse(env).ok_or_else(|| not_found(uri, "unknown environment"))?;
            Ok(ResourceRef::Slots {
                project: project.to_string(),
                environment,
            })
        }
        ["deployments", id, "log"] => {
            let id = uuid::Uuid::parse_str(id)
                .map_err(|_| not_found(uri, "deployment ids are UUIDs"))?;
            Ok(ResourceRef::DeploymentLog(id))
        }
        _ => Err(not_found(uri, "no such codeb resource")),
    }
}

/// Text contents for a URI.
pub fn contents(uri: &str, mime: &str, text: String) -> ResourceContents {
    ResourceContents::text(text, uri).with_mime_type(mime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        assert_eq!(
            parse("codeb://projects/shop/staging/slots").unwrap(),
            ResourceRef::Slots {
                project: "shop".into(),
                environment: Environment::Staging
            }
        );
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            parse(&format!("codeb://deployments/{id}/log")).unwrap(),
            ResourceRef::DeploymentLog(id)
        );
        for bad in [
            "codeb://projects/-x/staging/slots",
            "codeb://projects/shop/prod/slots",
            "codeb://deployments/nope/log",
            "file:///etc/passwd",
            "codeb://projects/shop/staging/slots/extra",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.data.unwrap()["uri"], bad);
        }
    }
}
