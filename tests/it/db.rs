//! Database tests on a real PostgreSQL: each gets a fresh migrated database.

use codeb::state::{projects, slots};
use sqlx::PgPool;

#[sqlx::test(migrator = "codeb::state::MIGRATOR")]
async fn project_insert_allocates_lowest_free_pairs(pool: PgPool) {
    let a = projects::project_insert(&pool, "alpha", "default", "node")
        .await
        .unwrap();
    let b = projects::project_insert(&pool, "beta", "default", "nextjs")
        .await
        .unwrap();
    let pa = projects::project_by_name(&pool, "alpha")
        .await
        .unwrap()
        .unwrap();
    let pb = projects::project_by_name(&pool, "beta")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pa.id, a);
    assert_eq!(pb.id, b);
    assert_eq!(
        pa.environments,
        vec![
            ("preview".to_string(), 5000),
            ("production".to_string(), 4100),
            ("staging".to_string(), 4500)
        ]
    );
    assert_eq!(
        pb.environments,
        vec![
            ("preview".to_string(), 5002),
            ("production".to_string(), 4102),
            ("staging".to_string(), 4502)
        ]
    );
    let s = slots::slots_for_project(&pool, a, Some("production"))
        .await
        .unwrap();
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|r| r.state == "empty" && r.base_port == 4100));
}

#[sqlx::test(migrator = "codeb::state::MIGRATOR")]
async fn freed_pair_is_reused_first(pool: PgPool) {
    projects::project_insert(&pool, "alpha", "default", "node")
        .await
        .unwrap();
    projects::project_insert(&pool, "beta", "default", "node")
        .await
        .unwrap();
    sqlx::query("DELETE FROM projects WHERE name = 'alpha'")
        .execute(&pool)
        .await
        .unwrap();
    projects::project_insert(&pool, "gamma", "default", "node")
        .await
        .unwrap();
    let g = projects::project_by_name(&pool, "gamma")
        .await
        .unwrap()
        .unwrap();
    assert!(g.environments.contains(&("production".to_string(), 4100)));
}

#[sqlx::test(migrator = "codeb::state::MIGRATOR")]
async fn constraints_guard_ports_names_and_states(pool: PgPool) {
    let id = projects::project_insert(&pool, "alpha", "default", "node")
        .await
        .unwrap();
    let other = projects::project_insert(&pool, "beta", "default", "node")
        .await
        .unwrap();
    // A port pair is unique across projects.
    let e = sqlx::query("UPDATE project_environments SET base_port = 4100 WHERE project_id = $1 AND environment = 'production'")
        .bind(other)
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().unwrap().constraint(),
        Some("project_environments_port_unique")
    );
    // Odd or out-of-range base ports are refused.
    for (port, constraint) in [
        (4103, "project_environments_port_even"),
        (4500, "project_environments_port_range"),
    ] {
        let e = sqlx::query("UPDATE project_environments SET base_port = $2 WHERE project_id = $1 AND environment = 'production'")
            .bind(other)
            .bind(port)
            .execute(&pool)
            .await
            .unwrap_err();
        assert_eq!(
            e.as_database_error().unwrap().constraint(),
            Some(constraint),
            "port {port}"
        );
    }
    // Names follow the DESIGN pattern.
    let e = sqlx::query("INSERT INTO projects (name, team_id) VALUES ('-bad', 'default')")
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().unwrap().constraint(),
        Some("projects_name_format")
    );
    // At most one active slot per environment.
    sqlx::query("UPDATE slots SET state = 'active' WHERE project_id = $1 AND environment = 'production' AND slot = 'blue'")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let e = sqlx::query("UPDATE slots SET state = 'active' WHERE project_id = $1 AND environment = 'production' AND slot = 'green'")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().unwrap().constraint(),
        Some("slots_one_active")
    );
    // A grace slot needs an expiry.
    let e = sqlx::query("UPDATE slots SET state = 'grace' WHERE project_id = $1 AND environment = 'staging' AND slot = 'blue'")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().unwrap().constraint(),
        Some("slots_grace_has_expiry")
    );
}

#[sqlx::test(migrator = "codeb::state::MIGRATOR")]
async fn one_running_operation_per_environment(pool: PgPool) {
    let id = projects::project_insert(&pool, "alpha", "default", "node")
        .await
        .unwrap();
    let insert = |env: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO deployments (id, project_id, environment, operation, principal) VALUES ($1, $2, $3, 'deploy', 'test')")
                .bind(uuid::Uuid::new_v4())
                .bind(id)
                .bind(env)
                .execute(&pool)
                .await
        }
    };
    insert("production").await.unwrap();
    let e = insert("production").await.unwrap_err();
    assert_eq!(
        e.as_database_error().unwrap().constraint(),
        Some("deployments_one_running")
    );
    insert("staging").await.unwrap();
    sqlx::query("UPDATE deployments SET status = 'succeeded' WHERE environment = 'production'")
        .execute(&pool)
        .await
        .unwrap();
    insert("production").await.unwrap();
}

#[sqlx::test(migrator = "codeb::state::MIGRATOR")]
async fn projects_page_paginates_by_name(pool: PgPool) {
    for n in ["delta", "alpha", "charlie", "bravo"] {
        projects::project_insert(&pool, n, "default", "node")
            .await
            .unwrap();
    }
    let first = projects::projects_page(&pool, None, None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "bravo"]
    );
    let second = projects::projects_page(&pool, None, Some("bravo"), 2)
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["charlie", "delta"]
    );
    let other_team = projects::projects_page(&pool, Some("nobody"), None, 10)
        .await
        .unwrap();
    assert!(other_team.is_empty());
}

#[sqlx::test(migrator = "codeb::state::MIGRATOR")]
async fn full_port_range_is_a_clear_error(pool: PgPool) {
    // Fill the preview range (250 pairs) with placeholder rows.
    sqlx::query(
        "WITH p AS (INSERT INTO projects (name, team_id) VALUES ('filler', 'default') RETURNING id)
         INSERT INTO project_environments (project_id, environment, base_port)
         SELECT p.id, 'preview', 5000 FROM p",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (i, port) in (5002..5499).step_by(2).enumerate() {
        let name = format!("filler{i}");
        sqlx::query(
            "WITH p AS (INSERT INTO projects (name, team_id) VALUES ($1, 'default') RETURNING id)
             INSERT INTO project_environments (project_id, environment, base_port) SELECT p.id, 'preview', $2 FROM p",
        )
        .bind(&name)
        .bind(port)
        .execute(&pool)
        .await
        .unwrap();
    }
    let e = projects::project_insert(&pool, "late", "default", "node")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no free port pair left in the preview range"),
        "{e}"
    );
    assert!(
        projects::project_by_name(&pool, "late")
            .await
            .unwrap()
            .is_none(),
        "nothing half-made"
    );
}
