//! Critical operations (DESIGN §6: project_delete, domain_delete,
//! backup_restore): each is first planned from the live state; the plan's
//! hash is what a human confirms (elicitation) or a second admin approves.
//! Execution recomputes the plan under the operation lock and refuses when
//! the hash differs, so an approval never applies to a state nobody saw.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::Environment;

/// A dry-run plan of a critical operation, computed from the live state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CriticalPlan {
    /// Tool name (`project_delete`, `domain_delete`, `backup_restore`).
    pub tool: &'static str,
    /// The project it acts on (team scoping, approval listing).
    pub project: String,
    /// The project's row id: a project deleted and created again under the
    /// same name is another project, and no confirmation carries over.
    pub project_id: i64,
    /// The project's team.
    pub team: String,
    /// The environments whose contents it changes or removes (the
    /// confirmation policy, `auth.approval_required`, is per environment);
    /// derived from `details`.
    pub environments: Vec<Environment>,
    /// One or two sentences for humans: what will be removed or replaced.
    pub summary: String,
    /// Everything the operation will touch, as observed now: deterministic
    /// (sorted lists, no timestamps), names and fingerprints only, never
    /// secret values. Its hash binds a confirmation to this exact state.
    pub details: serde_json::Value,
}

impl CriticalPlan {
    /// SHA-256 (hex) over tool, project (name, id and team), environments
    /// and details: a confirmation binds to this project of this team in
    /// this state, and cannot transfer to a namesake.
    pub fn hash(&self) -> String {
        let canonical = serde_json::json!({
            "tool": self.tool,
            "project": self.project,
            "project_id": self.project_id,
            "team": self.team,
            "environments": self.environments,
            "details": self.details,
        });
        // serde_json's Map is a BTreeMap here (no preserve_order), so the
        // text is canonical: keys sorted at every level.
        let text = serde_json::to_string(&canonical).expect("plan serializes");
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// The error text when the live state no longer matches an approved plan.
pub fn stale_plan_message(tool: &str, project: &str) -> String {
    format!(
        "{tool} on {project} refused: the live state changed since this plan was confirmed \
         (its plan hash no longer matches), so the confirmation does not apply. Nothing was \
         changed; call {tool} again to see the current plan and confirm that one"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_part_and_not_on_key_order() {
        let plan = |details: serde_json::Value| CriticalPlan {
            tool: "project_delete",
            project: "shop".into(),
            project_id: 7,
            team: "acme".into(),
            environments: vec![Environment::Production],
            summary: "s".into(),
            details,
        };
        let a = plan(serde_json::json!({"a": 1, "b": [1, 2]}));
        let b = plan(serde_json::from_str(r#"{"b": [1, 2], "a": 1}"#).unwrap());
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 64);
        assert_ne!(
            a.hash(),
            plan(serde_json::json!({"a": 1, "b": [2, 1]})).hash()
        );
        let mut other = a.clone();
        other.project = "shop2".into();
        assert_ne!(a.hash(), other.hash());
        // The same name deleted and created again, or of another team: a
        // confirmation of the old one does not apply.
        let mut recreated = a.clone();
        recreated.project_id = 8;
        assert_ne!(a.hash(), recreated.hash());
        let mut other_team = a.clone();
        other_team.team = "umbrella".into();
        assert_ne!(a.hash(), other_team.hash());
        let mut staging = a.clone();
        staging.environments = vec![Environment::Staging];
        assert_ne!(a.hash(), staging.hash());
        let mut summary_only = a.clone();
        summary_only.summary = "different words".into();
        assert_eq!(
            a.hash(),
            summary_only.hash(),
            "the summary is prose, not state"
        );
    }
}
