//! Prompts (DESIGN §5): a ship runbook and an incident rollback runbook.
//! They only arrange tool calls in a safe order; codeb enforces the rules.

use std::collections::BTreeMap;

use rmcp::model::{GetPromptResult, Prompt, PromptArgument, PromptMessage, Role};
use rmcp::ErrorData;

use crate::model::{describe_input, validate_project_name, Environment};

/// Name of the ship runbook.
pub const SHIP: &str = "ship";
/// Name of the incident rollback runbook.
pub const INCIDENT_ROLLBACK: &str = "incident_rollback";

fn args() -> Vec<PromptArgument> {
    vec![
        PromptArgument::new("project")
            .with_description("Project name (lowercase letters, digits, '-').")
            .with_required(true),
        PromptArgument::new("environment")
            .with_description("production, staging or preview (default production).")
            .with_required(false),
    ]
}

/// Every prompt.
pub fn prompt_list() -> Vec<Prompt> {
    let mut ship = Prompt::new(
        SHIP,
        Some("Runbook: check health, deploy an image, verify the preview, then promote."),
        Some(args()),
    );
    ship.title = Some("Ship a release".into());
    let mut rollback = Prompt::new(
        INCIDENT_ROLLBACK,
        Some("Runbook: confirm the incident, roll back to the grace slot, verify, record why."),
        Some(args()),
    );
    rollback.title = Some("Roll back during an incident".into());
    vec![ship, rollback]
}

/// Renders one prompt with its arguments, validating them first.
pub fn prompt_get(
    name: &str,
    arguments: Option<&BTreeMap<String, String>>,
) -> Result<GetPromptResult, ErrorData> {
    let get = |k: &str| arguments.and_then(|a| a.get(k)).map(String::as_str);
    let project = get("project")
        .ok_or_else(|| ErrorData::invalid_params("argument `project` is required", None))?;
    validate_project_name(project).map_err(|e| ErrorData::invalid_params(e.0, None))?;
    let environment = match get("environment") {
        None | Some("") => Environment::Production,
        Some(e) => Environment::parse(e).ok_or_else(|| {
            ErrorData::invalid_params(
                format!(
                    "environment {} is not production, staging or preview",
                    describe_input(e)
                ),
                None,
            )
        })?,
    };
    let text = match name {
        SHIP => format!(
            "Ship a new release of `{project}` to {environment} with codeb.\n\
             1. Call health_check; stop if any server is unhealthy and report it.\n\
             2. Call slot_status for project `{project}`, environment `{environment}`: note the active slot and image.\n\
             3. Deploy the image with deploy (dry_run first, show the plan, then run it). Production takes only an image already deployed healthy to staging: deploy it to staging first.\n\
             4. Open the preview URL from the result and check it answers as expected.\n\
             5. Promote with promote; confirm that the domain now serves the new slot.\n\
             6. Report the deployment id, the slot, the image and the summary lines."
        ),
        INCIDENT_ROLLBACK => format!(
            "Handle an incident on `{project}` ({environment}) with codeb.\n\
             1. Call health_check and slot_status for `{project}` / `{environment}`; describe what is failing.\n\
             2. If a grace slot exists, call rollback with a reason that names the incident.\n\
             3. Verify with slot_status that the previous slot is active again.\n\
             4. Report what changed (including the env-version difference) and what to investigate next."
        ),
        other => {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt {}; prompts are ship and incident_rollback", describe_input(other)),
                None,
            ))
        }
    };
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(format!("{name} runbook")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn prompts_render_and_validate() {
        assert_eq!(prompt_list().len(), 2);
        let r = prompt_get(SHIP, Some(&a(&[("project", "shop")]))).unwrap();
        assert_eq!(r.messages.len(), 1);
        assert!(prompt_get(SHIP, Some(&a(&[("project", "-x")]))).is_err());
        assert!(prompt_get(SHIP, None).is_err());
        assert!(prompt_get(
            INCIDENT_ROLLBACK,
            Some(&a(&[("project", "shop"), ("environment", "prod")]))
        )
        .is_err());
        assert!(prompt_get("nope", Some(&a(&[("project", "shop")]))).is_err());
    }
}
