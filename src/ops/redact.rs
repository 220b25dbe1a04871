//! Scrubbing of secret values from text that leaves codeb (DESIGN §3):
//! logs, errors, journals, audit rows and container output.
//!
//! **Who owns a secret.** codeb's own credentials (database password,
//! PowerDNS key, Redis admin password, master key) are *codeb's* and are
//! masked everywhere. Every other value belongs to one project: its env
//! values and the storage passwords generated for it. A project's values
//! are masked only in that project's outputs — its journal, its errors,
//! its `logs`, the audit rows of its calls — and in codeb's own log
//! (stderr, read by the operator only). So no team can make text in
//! another team's outputs disappear by setting it as an env value, and no
//! team can use masking as an oracle for another team's secrets.
//!
//! **Scopes.** `redact` masks with the scope of the task it runs in:
//! `call_tool` runs every tool call in the scope of its caller's team and
//! the project it names (`in_scope`); outside any scope only codeb's own
//! secrets are masked. `redact_in` takes the scope explicitly (journals,
//! audit rows, the log writer).
//!
//! **When values arrive.** Values are registered only after the caller was
//! authorized and the value was written (env_set, project_create), never
//! for a dry run or a refused call; at start-up codeb registers the values
//! of every project's current env versions (`ops::env::register_stored`),
//! so `logs` is redacted after a restart too.
//!
//! **Which values.** At least `MIN_SECRET_LEN` bytes; not an environment
//! name or the project's own name (codeb prints those in every message);
//! not the values of `NAME_KEYS` (names codeb prints anyway). A value with
//! line breaks is registered line by line (each trimmed line that
//! qualifies), so one printed line of a PEM key is masked too.
//!
//! **Bounded.** Each registered value is charged its length plus
//! `VALUE_OVERHEAD_BYTES` (the matcher's share). A project may hold
//! `PROJECT_BUDGET_BYTES`, all projects together `TOTAL_BUDGET_BYTES`.
//! When a write would put a project's *current* values over either
//! budget, the write is refused before it happens (`check_budget`) —
//! codeb never stops masking a value that is in use. Values superseded by
//! a later version (no longer in any current version) are kept while
//! there is room and are the only ones evicted, oldest first.
//!
//! **Matching.** One Aho-Corasick automaton over *anchors* — the first
//! `ANCHOR_LEN` bytes of each value — finds candidate positions with
//! overlapping search; a candidate counts when the whole value follows and
//! its owner is in scope; all such ranges are merged and replaced by
//! `[redacted]`. Overlapping search means a value registered by one team
//! can never hide (by a longer, earlier match) a value of another; anchors
//! keep the automaton small whatever the values' lengths. A change builds
//! a new matcher with no lock readers take, then swaps an `Arc` under a
//! write lock held only for that pointer swap: readers never wait for a
//! rebuild.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// Shortest value registered: shorter ones would scrub ordinary words.
pub const MIN_SECRET_LEN: usize = 6;
/// Bytes of a value the automaton indexes; the rest is compared on a hit.
pub const ANCHOR_LEN: usize = 16;
/// What a registered value costs beyond its length (the automaton's states
/// for its anchor and the bookkeeping), in bytes.
pub const VALUE_OVERHEAD_BYTES: usize = 256;
/// Most bytes (values plus overhead) one project's values may take.
pub const PROJECT_BUDGET_BYTES: usize = 1 << 20;
/// Most bytes (values plus overhead) all projects' values may take.
pub const TOTAL_BUDGET_BYTES: usize = 64 << 20;
/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";
/// The source under which a project's generated storage passwords are
/// kept (env values are kept per environment name).
pub const STORAGE_SOURCE: &str = "storage";

/// Env keys whose values are names codeb prints anyway (the database role,
/// the Redis key prefix), not secrets.
pub const NAME_KEYS: [&str; 2] = ["POSTGRES_USER", crate::plan::storage::REDIS_PREFIX_KEY];

/// Whose secrets a text is scrubbed of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// codeb's own secrets only: text about no one project.
    Codeb,
    /// codeb's and one project's secrets: that project's journal, errors
    /// and logs, written by an operation already authorized for it.
    Project(&'a str),
    /// codeb's secrets, and the project's if it belongs to `team`: what a
    /// caller of `team` sees about `project` (errors, audit rows).
    TeamProject {
        /// The caller's team.
        team: &'a str,
        /// The project the call names.
        project: &'a str,
    },
    /// Every registered secret: codeb's own log (stderr), which only the
    /// operator reads.
    Everything,
}

/// A `Scope` that can live in a task-local.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedScope {
    /// The caller's team, if the scope is a team's view.
    pub team: Option<String>,
    /// The project, if any.
    pub project: Option<String>,
}

impl OwnedScope {
    /// A caller of `team` acting on `project` (if it names one).
    pub fn team_project(team: &str, project: Option<&str>) -> Self {
        Self {
            team: Some(team.to_string()),
            project: project.map(str::to_string),
        }
    }

    /// An operation on `project`, already authorized.
    pub fn project(project: &str) -> Self {
        Self {
            team: None,
            project: Some(project.to_string()),
        }
    }

    /// `text` scrubbed of this scope's secrets.
    pub fn redact(&self, text: &str) -> String {
        redact_in(self.as_scope(), text)
    }

    /// The scope as a `Scope`.
    pub fn as_scope(&self) -> Scope<'_> {
        match (&self.team, &self.project) {
            (_, None) => Scope::Codeb,
            (None, Some(p)) => Scope::Project(p),
            (Some(t), Some(p)) => Scope::TeamProject {
                team: t,
                project: p,
            },
        }
    }
}

tokio::task_local! {
    static SCOPE: OwnedScope;
}

/// Runs `fut` with `scope` as the scope of `redact`.
pub async fn in_scope<F: std::future::Future>(scope: OwnedScope, fut: F) -> F::Output {
    SCOPE.scope(scope, fut).await
}

/// Runs `f` with `scope` as the scope of `redact` (the synchronous
/// `in_scope`).
pub fn within<R>(scope: OwnedScope, f: impl FnOnce() -> R) -> R {
    SCOPE.sync_scope(scope, f)
}

/// A project a registration is for.
#[derive(Debug, Clone, Copy)]
pub struct ProjectRef<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its database id (a re-created project of the same name is another).
    pub id: i64,
    /// Its team.
    pub team: &'a str,
}

/// A write that would put a project's secret values over a budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OverBudget(pub String);

/// What is registered (for `/metrics` and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Projects with registered values.
    pub projects: usize,
    /// Distinct (owner, value) pairs in the matcher, codeb's included.
    pub values: usize,
    /// Bytes charged to projects (values plus overhead).
    pub project_bytes: usize,
}

fn cost(value: &str) -> usize {
    value.len() + VALUE_OVERHEAD_BYTES
}

/// One project's registered values.
struct ProjectSecrets {
    id: i64,
    /// `None` when only storage passwords were registered under its name
    /// (no team known yet): then no team's view includes it.
    team: Option<Arc<str>>,
    /// Current values per source (environment name or `STORAGE_SOURCE`),
    /// with the env version they came from.
    current: BTreeMap<String, (Option<i32>, BTreeSet<Arc<str>>)>,
    /// Values no longer current, oldest first, with their global sequence.
    superseded: VecDeque<(u64, Arc<str>)>,
}

impl ProjectSecrets {
    fn new(id: i64, team: Option<&str>) -> Self {
        Self {
            id,
            team: team.map(Arc::from),
            current: BTreeMap::new(),
            superseded: VecDeque::new(),
        }
    }

    fn current_values(&self) -> BTreeSet<&str> {
        self.current
            .values()
            .flat_map(|(_, s)| s.iter().map(|v| &**v))
            .collect()
    }

    fn all_values(&self) -> BTreeSet<&str> {
        let mut all = self.current_values();
        all.extend(self.superseded.iter().map(|(_, v)| &**v));
        all
    }

    fn charged(&self) -> usize {
        self.all_values().into_iter().map(cost).sum()
    }

    fn current_charged(&self) -> usize {
        self.current_values().into_iter().map(cost).sum()
    }
}

struct Registry {
    codeb: BTreeSet<Arc<str>>,
    projects: BTreeMap<String, ProjectSecrets>,
    sequence: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    codeb: BTreeSet::new(),
    projects: BTreeMap::new(),
    sequence: 0,
});

/// Whose a registered value is.
#[derive(Debug, Clone)]
enum Owner {
    Codeb,
    Project {
        name: Arc<str>,
        team: Option<Arc<str>>,
    },
}

impl Owner {
    fn in_scope(&self, scope: Scope<'_>) -> bool {
        match (self, scope) {
            (Owner::Codeb, _) | (_, Scope::Everything) => true,
            (Owner::Project { .. }, Scope::Codeb) => false,
            (Owner::Project { name, .. }, Scope::Project(p)) => &**name == p,
            (Owner::Project { name, team }, Scope::TeamProject { team: t, project }) => {
                &**name == project && team.as_deref() == Some(t)
            }
        }
    }
}

struct Candidate {
    value: Arc<str>,
    owner: Owner,
}

/// A published matcher: the anchors' automaton and, per anchor, the values
/// that start with it.
struct Matcher {
    automaton: AhoCorasick,
    candidates: Vec<Vec<Candidate>>,
    stats: Stats,
}

static PUBLISHED: RwLock<Option<Arc<Matcher>>> = RwLock::new(None);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn published() -> Option<Arc<Matcher>> {
    PUBLISHED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn anchor(value: &str) -> &[u8] {
    &value.as_bytes()[..value.len().min(ANCHOR_LEN)]
}

/// Builds the matcher for the registry as it is (no lock of readers is
/// held meanwhile) and swaps it in.
fn publish(r: &Registry) {
    let mut by_anchor: BTreeMap<&[u8], Vec<Candidate>> = BTreeMap::new();
    let mut values = 0;
    for v in &r.codeb {
        by_anchor.entry(anchor(v)).or_default().push(Candidate {
            value: v.clone(),
            owner: Owner::Codeb,
        });
        values += 1;
    }
    let mut project_bytes = 0;
    for (name, p) in &r.projects {
        let name: Arc<str> = Arc::from(name.as_str());
        let all = p.all_values();
        project_bytes += all.iter().map(|v| cost(v)).sum::<usize>();
        for v in all {
            let value: Arc<str> = Arc::from(v);
            by_anchor.entry(anchor(v)).or_default().push(Candidate {
                owner: Owner::Project {
                    name: name.clone(),
                    team: p.team.clone(),
                },
                value: value.clone(),
            });
            values += 1;
        }
    }
    let stats = Stats {
        projects: r.projects.len(),
        values,
        project_bytes,
    };
    let matcher = if by_anchor.is_empty() {
        None
    } else {
        let anchors: Vec<&[u8]> = by_anchor.keys().copied().collect();
        // The contiguous NFA: memory in proportion to the anchors' bytes
        // (a DFA, which the builder picks for few patterns, grows with
        // their length times the alphabet); overlapping search needs the
        // standard match semantics.
        AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(&anchors)
            .ok()
            .map(|automaton| {
                let candidates = by_anchor.into_values().collect();
                Arc::new(Matcher {
                    automaton,
                    candidates,
                    stats,
                })
            })
    };
    *PUBLISHED.write().unwrap_or_else(|e| e.into_inner()) = matcher;
}

/// Registers one of codeb's own secrets (masked in every output).
pub fn register(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut r = registry();
    if r.codeb.contains(secret) {
        return;
    }
    r.codeb.insert(Arc::from(secret));
    publish(&r);
}

/// Whether `value` is a name codeb prints in `project`'s messages.
fn is_printed_name(project: &str, value: &str) -> bool {
    value == project
        || crate::model::Environment::ALL
            .iter()
            .any(|e| e.as_str() == value)
}

/// The redaction candidates among `values` of `project`: each value of
/// at least `MIN_SECRET_LEN` bytes, multi-line values by their trimmed
/// lines, without names codeb prints (environment names, the project's
/// own name).
pub fn candidates<'a>(
    project: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |s: &str| {
        if s.len() >= MIN_SECRET_LEN && !is_printed_name(project, s) {
            out.insert(s.to_string());
        }
    };
    for v in values {
        if v.contains('\n') {
            v.lines().map(str::trim).for_each(&mut add);
        } else {
            add(v);
        }
    }
    out
}

/// The candidates of a set of env variables, except those of `NAME_KEYS`.
pub fn env_candidates<'a>(
    project: &str,
    vars: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> BTreeSet<String> {
    candidates(
        project,
        vars.into_iter()
            .filter(|(k, _)| !NAME_KEYS.contains(&k.as_str()))
            .map(|(_, v)| v.as_str()),
    )
}

/// The project's entry, made (or replaced, when a project of that name
/// with another id was registered before: it was deleted) on demand.
fn project_entry<'r>(r: &'r mut Registry, p: &ProjectRef<'_>) -> &'r mut ProjectSecrets {
    let stale = r
        .projects
        .get(p.name)
        .is_some_and(|e| e.id != p.id && e.id != 0);
    if stale {
        r.projects.remove(p.name);
    }
    let e = r
        .projects
        .entry(p.name.to_string())
        .or_insert_with(|| ProjectSecrets::new(p.id, Some(p.team)));
    e.id = p.id;
    e.team = Some(Arc::from(p.team));
    e
}

/// Makes sure project `p` has an entry of its own (dropping one of an
/// earlier project of that name), so values added by name
/// (`add_current`) are its.
pub fn open_project(p: &ProjectRef<'_>) {
    let mut r = registry();
    let before = r.projects.get(p.name).map(|e| e.id);
    project_entry(&mut r, p);
    if before != Some(p.id) {
        publish(&r);
    }
}

/// Checks that setting `source`'s values of project `p` to `values` keeps
/// the project's current values within `PROJECT_BUDGET_BYTES` and all
/// projects' within `TOTAL_BUDGET_BYTES`; the error says what to do.
/// Superseded values do not count: they are evicted to make room.
pub fn check_budget(
    p: &ProjectRef<'_>,
    source: &str,
    values: &BTreeSet<String>,
) -> Result<(), OverBudget> {
    let r = registry();
    let mut project_values: BTreeSet<&str> = values.iter().map(String::as_str).collect();
    let mut others = 0;
    for (name, e) in &r.projects {
        if name == p.name && (e.id == p.id || e.id == 0) {
            for (s, (_, vals)) in &e.current {
                if s != source {
                    project_values.extend(vals.iter().map(|v| &**v));
                }
            }
        } else {
            others += e.current_charged();
        }
    }
    let project_bytes: usize = project_values.into_iter().map(cost).sum();
    if project_bytes > PROJECT_BUDGET_BYTES {
        return Err(OverBudget(format!(
            "refused: {}'s secret values would take {project_bytes} bytes of codeb's redaction budget (each value counts its length plus {VALUE_OVERHEAD_BYTES} bytes; a project may hold {PROJECT_BUDGET_BYTES}). Unset keys no longer needed (env_set with unset) or shorten values, then try again",
            p.name
        )));
    }
    if others + project_bytes > TOTAL_BUDGET_BYTES {
        return Err(OverBudget(format!(
            "refused: codeb's redaction budget for all projects ({TOTAL_BUDGET_BYTES} bytes) is full; {} holds {project_bytes} bytes of it with this change. Unset keys no longer needed, or ask the operator to remove unused projects",
            p.name
        )));
    }
    Ok(())
}

/// Keeps both budgets by evicting superseded values, oldest first: first
/// from `project`, then from any project. Current values are never evicted.
fn evict(r: &mut Registry, project: &str) {
    if let Some(e) = r.projects.get_mut(project) {
        while e.charged() > PROJECT_BUDGET_BYTES && e.superseded.pop_front().is_some() {}
    }
    loop {
        let total: usize = r.projects.values().map(ProjectSecrets::charged).sum();
        if total <= TOTAL_BUDGET_BYTES {
            return;
        }
        let oldest = r
            .projects
            .values_mut()
            .filter_map(|e| Some((e.superseded.front()?.0, e)))
            .min_by_key(|(seq, _)| *seq);
        match oldest {
            Some((_, e)) => {
                e.superseded.pop_front();
            }
            None => return,
        }
    }
}

/// One registration: the values of one source of one project.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Project name.
    pub project: String,
    /// Project id.
    pub project_id: i64,
    /// Project team.
    pub team: String,
    /// Environment name (or `STORAGE_SOURCE`).
    pub source: String,
    /// Env version the values come from.
    pub version: Option<i32>,
    /// The values (`candidates`).
    pub values: BTreeSet<String>,
}

/// Sets the current values of `source` (an environment name) of project
/// `p` to `values`, taken from env version `version`; values that leave
/// become superseded. Call after the version was written; never fails (a
/// value being written is always masked, even over a budget — check first
/// with `check_budget`). Builds the new matcher before returning (CPU
/// work: async callers run it with `spawn_blocking`).
pub fn set_current(
    p: &ProjectRef<'_>,
    source: &str,
    version: Option<i32>,
    values: BTreeSet<String>,
) {
    set_current_all(vec![Registration {
        project: p.name.to_string(),
        project_id: p.id,
        team: p.team.to_string(),
        source: source.to_string(),
        version,
        values,
    }]);
}

/// `set_current` for many sources at once (one rebuild). A registration
/// older than the version registered for its source adds its values as
/// superseded (a container may still run with them).
pub fn set_current_all(registrations: Vec<Registration>) {
    if registrations.is_empty() {
        return;
    }
    let mut r = registry();
    for reg in registrations {
        r.sequence += 1;
        let seq = r.sequence;
        let p = ProjectRef {
            name: &reg.project,
            id: reg.project_id,
            team: &reg.team,
        };
        let e = project_entry(&mut r, &p);
        let fresh: BTreeSet<Arc<str>> = reg.values.into_iter().map(Arc::from).collect();
        let newer = e
            .current
            .get(&reg.source)
            .and_then(|(v, _)| *v)
            .is_some_and(|registered| reg.version.is_some_and(|v| v < registered));
        let leaving = if newer {
            fresh
        } else {
            e.current
                .insert(reg.source.clone(), (reg.version, fresh))
                .map(|(_, v)| v)
                .unwrap_or_default()
        };
        let still: BTreeSet<String> = e.current_values().into_iter().map(str::to_string).collect();
        e.superseded.retain(|(_, v)| !still.contains(&**v));
        for v in leaving {
            if !still.contains(&*v) && !e.superseded.iter().any(|(_, s)| *s == v) {
                e.superseded.push_back((seq, v));
            }
        }
        evict(&mut r, &reg.project);
    }
    publish(&r);
}

/// Adds values to the current values of `source` of the project named
/// `project` (generated storage passwords: `STORAGE_SOURCE`). When no
/// project of that name is registered yet, its entry has no team: only
/// operations on it (`Scope::Project`) mask these values until
/// `set_current` names the team.
pub fn add_current(project: &str, source: &str, values: BTreeSet<String>) {
    if values.is_empty() {
        return;
    }
    let mut r = registry();
    let e = r
        .projects
        .entry(project.to_string())
        .or_insert_with(|| ProjectSecrets::new(0, None));
    let entry = e.current.entry(source.to_string()).or_default();
    entry.1.extend(values.into_iter().map(Arc::from));
    let still: BTreeSet<String> = e.current_values().into_iter().map(str::to_string).collect();
    e.superseded.retain(|(_, v)| !still.contains(&**v));
    evict(&mut r, project);
    publish(&r);
}

/// The env version whose values are registered as `source`'s current
/// values of project `p` (None: nothing registered for it, or another
/// project of that name).
pub fn registered_version(p: &ProjectRef<'_>, source: &str) -> Option<i32> {
    let r = registry();
    let e = r.projects.get(p.name)?;
    if e.id != p.id {
        return None;
    }
    e.current.get(source).and_then(|(v, _)| *v)
}

/// Forgets every value of the project named `project` (it was deleted, or
/// its creation was undone).
pub fn forget_project(project: &str) {
    let mut r = registry();
    if r.projects.remove(project).is_some() {
        publish(&r);
    }
}

/// What is registered now.
pub fn stats() -> Stats {
    published().map(|m| m.stats).unwrap_or_default()
}

/// `text` with every secret of `scope` replaced by `[redacted]`.
pub fn redact_in(scope: Scope<'_>, text: &str) -> String {
    let Some(m) = published() else {
        return text.to_string();
    };
    let bytes = text.as_bytes();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for hit in m.automaton.find_overlapping_iter(text) {
        let start = hit.start();
        let end = m.candidates[hit.pattern().as_usize()]
            .iter()
            .filter(|c| c.owner.in_scope(scope) && bytes[start..].starts_with(c.value.as_bytes()))
            .map(|c| start + c.value.len())
            .max();
        if let Some(end) = end {
            ranges.push((start, end));
        }
    }
    if ranges.is_empty() {
        return text.to_string();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut open: Option<(usize, usize)> = None;
    for (s, e) in ranges {
        match &mut open {
            Some((_, oe)) if s <= *oe => *oe = (*oe).max(e),
            _ => {
                if let Some((os, oe)) = open.take() {
                    out.push_str(&text[at..os]);
                    out.push_str(REDACTED);
                    at = oe;
                }
                open = Some((s, e));
            }
        }
    }
    if let Some((os, oe)) = open {
        out.push_str(&text[at..os]);
        out.push_str(REDACTED);
        at = oe;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` with every secret of the current task's scope (`in_scope`)
/// replaced; outside any scope, codeb's own secrets only.
pub fn redact(text: &str) -> String {
    SCOPE
        .try_with(|s| redact_in(s.as_scope(), text))
        .unwrap_or_else(|_| redact_in(Scope::Codeb, text))
}

/// A log writer (stderr) that redacts each formatted event of every
/// registered secret before writing it; tracing writes one event per
/// `write_all`.
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact_in(Scope::Everything, &text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The registry is process-wide: every test uses its own project names
    // and values.
    fn set(name: &str, id: i64, team: &str, source: &str, values: &[&str]) {
        set_current(
            &ProjectRef { name, id, team },
            source,
            Some(1),
            values.iter().map(|v| v.to_string()).collect(),
        );
    }

    #[test]
    fn codeb_secrets_are_scrubbed_everywhere() {
        register("canary-redact-1234");
        register("abc");
        register("canary-redact-1234-longer");
        for scope in [Scope::Codeb, Scope::Project("x"), Scope::Everything] {
            assert_eq!(
                redact_in(scope, "x canary-redact-1234 y abc"),
                "x [redacted] y abc"
            );
            assert_eq!(
                redact_in(scope, "canary-redact-1234-longer!"),
                "[redacted]!"
            );
        }
        assert_eq!(redact("canary-redact-1234"), "[redacted]");
        let mut w = RedactingStderr;
        assert_eq!(w.write(b"canary-redact-1234\n").unwrap(), 19);
    }

    #[test]
    fn project_values_are_masked_in_that_projects_outputs_only() {
        set("rd-alpha", 11, "team-a", "production", &["alpha-token-991"]);
        set(
            "rd-beta",
            12,
            "team-b",
            "production",
            &["rd-alpha", "alice-principal"],
        );
        let text = "rd-alpha used alpha-token-991 as alice-principal";
        assert_eq!(
            redact_in(Scope::Project("rd-alpha"), text),
            "rd-alpha used [redacted] as alice-principal"
        );
        assert_eq!(
            redact_in(
                Scope::TeamProject {
                    team: "team-a",
                    project: "rd-alpha"
                },
                text
            ),
            "rd-alpha used [redacted] as alice-principal"
        );
        // Another team naming the project sees none of its values masked
        // (no oracle), and team B's values never touch team A's view.
        assert_eq!(
            redact_in(
                Scope::TeamProject {
                    team: "team-b",
                    project: "rd-alpha"
                },
                text
            ),
            text
        );
        assert_eq!(redact_in(Scope::Codeb, text), text);
        // Team B's own view masks its own values.
        assert_eq!(
            redact_in(
                Scope::TeamProject {
                    team: "team-b",
                    project: "rd-beta"
                },
                text
            ),
            "[redacted] used alpha-token-991 as [redacted]"
        );
        // The operator's log masks all.
        assert_eq!(
            redact_in(Scope::Everything, text),
            "[redacted] used [redacted] as [redacted]"
        );
    }

    #[test]
    fn a_foreign_overlapping_value_cannot_hide_a_secret() {
        // Team B registers a value overlapping the start of team A's
        // secret; leftmost-longest matching would let it swallow the first
        // bytes and leave the rest unmatched. Overlapping search does not.
        set(
            "rd-gamma",
            21,
            "team-g",
            "staging",
            &["s3cr3t-gamma-value-0042"],
        );
        set("rd-delta", 22, "team-d", "staging", &["token=s3cr3t"]);
        let text = "token=s3cr3t-gamma-value-0042.";
        assert_eq!(
            redact_in(Scope::Project("rd-gamma"), text),
            "token=[redacted]."
        );
        assert_eq!(redact_in(Scope::Everything, text), "[redacted].");
    }

    #[test]
    fn long_values_match_whole_and_lines_separately() {
        let long = format!("LONGVALUE-{}", "x".repeat(5000));
        let pem =
            "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n  abcdefghijklmnop  \nend\n";
        let vals = candidates(
            "rd-eps",
            [long.as_str(), pem, "production", "rd-eps", "short"],
        );
        assert!(vals.contains(&long));
        assert!(vals.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"));
        assert!(vals.contains("abcdefghijklmnop"));
        assert!(vals.contains("-----BEGIN KEY-----"));
        assert!(!vals
            .iter()
            .any(|v| v == "end" || v == "production" || v == "rd-eps" || v == "short"));
        set_current(
            &ProjectRef {
                name: "rd-eps",
                id: 31,
                team: "t",
            },
            "preview",
            Some(1),
            vals,
        );
        let s = Scope::Project("rd-eps");
        assert_eq!(redact_in(s, &format!("<{long}>")), "<[redacted]>");
        // The first bytes alone are not the value.
        assert_eq!(redact_in(s, &long[..100]), long[..100]);
        assert_eq!(
            redact_in(s, "key: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC;"),
            "key: [redacted];"
        );
        assert_eq!(
            redact_in(s, "in production for rd-eps"),
            "in production for rd-eps"
        );
    }

    #[test]
    fn name_keys_are_not_candidates() {
        let vars: BTreeMap<String, String> = [
            ("POSTGRES_USER", "rolename_production"),
            ("REDIS_PREFIX", "rolename:production:"),
            ("NODE_ENV", "production"),
            ("API_TOKEN", "canary-env-token-5678"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = env_candidates("rolename", &vars);
        assert_eq!(c, BTreeSet::from(["canary-env-token-5678".to_string()]));
    }

    #[test]
    fn replaced_values_are_superseded_then_evicted_never_current_ones() {
        let p = ProjectRef {
            name: "rd-zeta",
            id: 41,
            team: "t",
        };
        let big = |tag: char| format!("{tag}{}", "z".repeat(300 * 1024));
        set_current(&p, "production", Some(1), [big('a')].into());
        set_current(&p, "production", Some(2), [big('b')].into());
        // Both are masked: the old one is superseded, not gone.
        let s = Scope::Project("rd-zeta");
        assert_eq!(redact_in(s, &big('a')), "[redacted]");
        assert_eq!(registered_version(&p, "production"), Some(2));
        // Two more current values fill the budget: the superseded one goes.
        set_current(&p, "staging", Some(1), [big('c')].into());
        set_current(&p, "preview", Some(1), [big('d')].into());
        assert_eq!(redact_in(s, &big('a')), big('a'));
        for t in ['b', 'c', 'd'] {
            assert_eq!(redact_in(s, &big(t)), "[redacted]", "{t}");
        }
        // A fifth value would put the current values over the budget.
        let e = check_budget(&p, "preview", &[big('d'), big('e')].into()).unwrap_err();
        assert!(e.0.contains("unset"), "{e}");
        assert!(check_budget(&p, "preview", &[big('e')].into()).is_ok());
        // Registered anyway (a write that raced past the check): masked.
        set_current(&p, "preview", Some(2), [big('d'), big('e')].into());
        assert_eq!(redact_in(s, &big('e')), "[redacted]");
        assert_eq!(redact_in(s, &big('d')), "[redacted]");
        forget_project("rd-zeta");
        assert_eq!(redact_in(s, &big('d')), big('d'));
        assert_eq!(registered_version(&p, "production"), None);
    }

    #[test]
    fn a_recreated_project_starts_empty_and_storage_values_wait_for_a_team() {
        add_current(
            "rd-eta",
            STORAGE_SOURCE,
            ["eta-storage-pw-1".to_string()].into(),
        );
        assert_eq!(
            redact_in(Scope::Project("rd-eta"), "eta-storage-pw-1"),
            "[redacted]"
        );
        let view = Scope::TeamProject {
            team: "t",
            project: "rd-eta",
        };
        assert_eq!(redact_in(view, "eta-storage-pw-1"), "eta-storage-pw-1");
        set("rd-eta", 51, "t", "production", &["eta-env-value-1"]);
        assert_eq!(
            redact_in(view, "eta-storage-pw-1 eta-env-value-1"),
            "[redacted] [redacted]"
        );
        // Deleted and created again (another id): the old values are gone.
        set("rd-eta", 52, "u", "production", &["eta-env-value-2"]);
        assert_eq!(
            redact_in(Scope::Project("rd-eta"), "eta-env-value-1"),
            "eta-env-value-1"
        );
    }

    #[tokio::test]
    async fn the_task_scope_applies_to_redact() {
        set("rd-theta", 61, "t", "production", &["theta-secret-77"]);
        assert_eq!(redact("theta-secret-77"), "theta-secret-77");
        let inside = in_scope(OwnedScope::team_project("t", Some("rd-theta")), async {
            redact("theta-secret-77")
        })
        .await;
        assert_eq!(inside, "[redacted]");
        let other = in_scope(OwnedScope::team_project("u", Some("rd-theta")), async {
            redact("theta-secret-77")
        })
        .await;
        assert_eq!(other, "theta-secret-77");
    }
}
