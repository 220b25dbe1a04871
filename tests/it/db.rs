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

mod leases {
    use std::time::Duration;

    use codeb::state::deployments::{self as d, Begin, NewDeployment};
    use codeb::state::projects;
    use sqlx::PgPool;
    use uuid::Uuid;

    fn new<'a>(
        project_id: i64,
        owner: &'a str,
        key: Option<&'a str>,
        lease: Duration,
    ) -> NewDeployment<'a> {
        NewDeployment {
            id: Uuid::new_v4(),
            project_id,
            environment: "production",
            operation: "deploy",
            slot: Some("blue"),
            image: Some("r/demo:v1"),
            idempotency_key: key,
            principal: "test",
            reason: None,
            lease_owner: owner,
            lease,
        }
    }

    #[sqlx::test(migrator = "codeb::state::MIGRATOR")]
    async fn one_operation_at_a_time_with_fencing(pool: PgPool) {
        let pid = projects::project_insert(&pool, "alpha", "default", "node")
            .await
            .unwrap();
        let first = new(pid, "a", None, Duration::from_secs(60));
        let Begin::Started {
            fencing_token,
            recovered,
        } = d::deployment_begin(&pool, &first).await.unwrap()
        else {
            panic!("first starts")
        };
        assert!(recovered.is_empty());
        match d::deployment_begin(&pool, &new(pid, "b", None, Duration::from_secs(60)))
            .await
            .unwrap()
        {
            Begin::Busy {
                running_id,
                operation,
                ..
            } => {
                assert_eq!(running_id, first.id);
                assert_eq!(operation, "deploy");
            }
            other => panic!("second is busy: {other:?}"),
        }
        assert!(
            d::deployment_heartbeat(&pool, first.id, fencing_token, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !d::deployment_heartbeat(&pool, first.id, fencing_token + 1, Duration::from_secs(60))
                .await
                .unwrap(),
            "stale token refused"
        );
        d::step_append(
            &pool,
            first.id,
            "pull",
            Some("app"),
            &["podman".into(), "pull".into()],
            Some(0),
            None,
            Duration::from_millis(5),
        )
        .await
        .unwrap();
        assert!(
            d::deployment_finish(&pool, first.id, fencing_token, true, None, None)
                .await
                .unwrap()
        );
        assert!(
            !d::deployment_finish(&pool, first.id, fencing_token, true, None, None)
                .await
                .unwrap(),
            "finishes once"
        );
        let (status, steps) = d::deployment_journal(&pool, first.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, "succeeded");
        assert_eq!(steps.len(), 1);
        assert!(matches!(
            d::deployment_begin(&pool, &new(pid, "b", None, Duration::from_secs(60)))
                .await
                .unwrap(),
            Begin::Started { .. }
        ));
    }

    #[sqlx::test(migrator = "codeb::state::MIGRATOR")]
    async fn expired_lease_is_recovered_by_the_next_operation(pool: PgPool) {
        let pid = projects::project_insert(&pool, "alpha", "default", "node")
            .await
            .unwrap();
        let crashed = new(pid, "dead", None, Duration::from_secs(60));
        let Begin::Started { fencing_token, .. } =
            d::deployment_begin(&pool, &crashed).await.unwrap()
        else {
            panic!()
        };
        // The owner died: make its lease run out.
        sqlx::query(
            "UPDATE deployments SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        )
        .bind(crashed.id)
        .execute(&pool)
        .await
        .unwrap();
        let next = new(pid, "alive", None, Duration::from_secs(60));
        match d::deployment_begin(&pool, &next).await.unwrap() {
            Begin::Started {
                fencing_token: t2,
                recovered,
            } => {
                assert!(t2 > fencing_token, "fencing tokens grow");
                assert_eq!(recovered.len(), 1);
                assert_eq!(recovered[0].id, crashed.id);
                assert_eq!(recovered[0].slot.as_deref(), Some("blue"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !d::deployment_finish(&pool, crashed.id, fencing_token, true, None, None)
                .await
                .unwrap(),
            "the dead owner cannot finish"
        );
        let row = d::deployment_by_id(&pool, crashed.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, "recovered");
    }

    #[sqlx::test(migrator = "codeb::state::MIGRATOR")]
    async fn idempotency_key_returns_the_same_operation(pool: PgPool) {
        let pid = projects::project_insert(&pool, "alpha", "default", "node")
            .await
            .unwrap();
        let first = new(pid, "a", Some("ci-run-42"), Duration::from_secs(60));
        let Begin::Started { fencing_token, .. } =
            d::deployment_begin(&pool, &first).await.unwrap()
        else {
            panic!()
        };
        d::deployment_finish(&pool, first.id, fencing_token, true, None, None)
            .await
            .unwrap();
        match d::deployment_begin(
            &pool,
            &new(pid, "a", Some("ci-run-42"), Duration::from_secs(60)),
        )
        .await
        .unwrap()
        {
            Begin::Duplicate { existing_id } => assert_eq!(existing_id, first.id),
            other => panic!("{other:?}"),
        }
        let page = d::deployments_page(&pool, None, Some("alpha"), None, None, 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 1, "no second deployment");
    }

    #[sqlx::test(migrator = "codeb::state::MIGRATOR")]
    async fn concurrent_project_inserts(pool: PgPool) {
        let names: Vec<String> = (0..8).map(|i| format!("proj{i}")).collect();
        let results = futures::future::join_all(names.iter().map(|n| {
            let pool = pool.clone();
            let n = n.clone();
            async move { projects::project_insert(&pool, &n, "default", "node").await }
        }))
        .await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let ports: std::collections::BTreeSet<i32> =
            sqlx::query_scalar("SELECT base_port FROM project_environments")
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(ports.len(), 24, "distinct pairs");
        let same = futures::future::join_all((0..2).map(|_| {
            let pool = pool.clone();
            async move { projects::project_insert(&pool, "twin", "default", "node").await }
        }))
        .await;
        assert_eq!(same.iter().filter(|r| r.is_ok()).count(), 1);
        let err = same.into_iter().find_map(|r| r.err()).unwrap();
        assert!(err.to_string().contains("already exists"), "{err}");
    }
}
