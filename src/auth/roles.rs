//! The role each tool needs (DESIGN §5 table).

use crate::model::Role;

/// The role a tool needs, or None for a tool this table does not know
/// (which nobody may call: a new tool must be classified here first).
pub fn required_role(tool: &str) -> Option<Role> {
    Some(match tool {
        "project_list" | "slot_status" | "deployment_list" | "deployment_get" | "logs"
        | "env_get" | "domain_list" | "health_check" | "drift_report" | "backup_list" => {
            Role::Viewer
        }
        "deploy" | "promote" | "rollback" | "env_set" | "env_sync" | "domain_setup"
        | "backup_create" => Role::Member,
        "project_create" | "slot_cleanup" | "key_create" | "key_list" | "key_revoke"
        | "audit_query" | "approval_list" | "approve" => Role::Admin,
        // Critical: admin, and a confirmation the model cannot forge.
        "domain_delete" | "backup_restore" | "project_delete" => Role::Admin,
        _ => return None,
    })
}

/// Whether a caller with `role` may call `tool`.
pub fn may_call(role: Role, tool: &str) -> bool {
    required_role(tool).is_some_and(|needed| role >= needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_classified() {
        for t in crate::mcp::CodebServer::tool_definitions() {
            assert!(required_role(&t.name).is_some(), "{} has no role", t.name);
        }
    }

    #[test]
    fn read_only_tools_are_exactly_the_viewer_tools() {
        for t in crate::mcp::CodebServer::tool_definitions() {
            let read_only = t
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false);
            if required_role(&t.name) == Some(Role::Viewer) {
                assert!(read_only, "{} is for viewers but not read-only", t.name);
            }
        }
        assert!(may_call(Role::Owner, "key_create"));
        assert!(!may_call(Role::Member, "key_create"));
        assert!(!may_call(Role::Owner, "no_such_tool"));
    }
}
