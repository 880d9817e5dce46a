//! The PostgreSQL records store (sqlx), for engines that share their records.
//!
//! Tables (see `connectors/migrations/`): `teams`, `environments`, `namespace_records` and
//! `outbox`, in the schema given to [`PgRecords::connect`] (or the server's `search_path`).
//! Each row keeps the whole record as JSON in `doc`; columns copy what is filtered, ordered
//! or locked on.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use workflows::records::{
    Actor, Change, ClusterStatus, Environment, EnvironmentSpec, NamespaceFilter, NamespaceRecord,
    NamespaceSpec, NamespaceState, OutboxEvent, Page, RecordKind, Records, RecordsError,
    RecordsResult, Team, TeamSpec, TeamStatus, page_size,
};

use super::new_event_id;

/// The migrations in `connectors/migrations`, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connections in the pool.
const MAX_CONNECTIONS: u32 = 8;
/// How long a call waits for a free connection before failing (retryably).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of an upsert that races another creating the same namespace record.
const UPSERT_ATTEMPTS: usize = 3;

/// Why migrating, or checking the migrations, failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Migrations built into this engine are not applied; run `engine migrate`.
    #[error("the records database lacks migrations {}; run `engine migrate`", .missing.join(", "))]
    Missing { missing: Vec<String> },
    /// An applied migration differs from the one built into this engine.
    #[error("applied migration {migration} differs from the one built into this engine")]
    Modified { migration: String },
    /// A migration failed partway and left its mark.
    #[error("migration {migration} failed partway; repair the database, then run `engine migrate`")]
    Dirty { migration: String },
    #[error("schema name {0:?} is not a plain lowercase identifier ([a-z_][a-z0-9_]*, at most 63)")]
    BadSchema(String),
    #[error("applying migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the records database failed")]
    Database(#[from] sqlx::Error),
}

/// The records store on PostgreSQL.
///
/// # Guarantees
/// - Each mutation is one transaction: the record row (locked with `SELECT … FOR UPDATE`,
///   then written with `UPDATE … WHERE resource_version = $old`) and its outbox row commit
///   together or not at all; `Ok` means committed.
/// - Events of one record enter the outbox in the order of its changes (its row lock
///   serialises them). Across records, `seq` follows insertion, and a relay may see a
///   later `seq` commit before an earlier one.
/// - Namespace names are unique (a constraint) and a purge removes the team's namespace
///   records with it (`ON DELETE CASCADE`).
#[derive(Clone)]
pub struct PgRecords {
    pool: PgPool,
    schema: Option<String>,
}

impl PgRecords {
    /// Connects a pool to `url`; with `schema`, every connection uses it as its
    /// `search_path` (tables and `_sqlx_migrations` live there; [`Self::migrate`] creates it).
    ///
    /// # Errors
    /// `Backend` when the URL is malformed, the schema name is not a plain identifier, or the
    /// server cannot be reached (retryable).
    pub async fn connect(url: &str, schema: Option<&str>) -> RecordsResult<Self> {
        let mut options: PgConnectOptions = url.parse().map_err(RecordsError::permanent)?;
        if let Some(schema) = schema {
            if !is_plain_identifier(schema) {
                return Err(RecordsError::permanent(MigrationError::BadSchema(schema.to_owned())));
            }
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(PgRecords { pool, schema: schema.map(str::to_owned) })
    }

    /// The connection pool (for readiness checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the schema if one was given, then applies every embedded migration not yet
    /// applied.
    ///
    /// # Guarantees
    /// Each migration runs in its own transaction (unless it opts out) under an advisory lock,
    /// so concurrent callers apply each migration once.
    ///
    /// # Errors
    /// [`MigrationError`] when a migration fails or an applied one was changed.
    pub async fn migrate(&self) -> Result<(), MigrationError> {
        if let Some(schema) = &self.schema {
            // `schema` is a checked plain identifier, so it is safe to splice in.
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&self.pool)
                .await?;
        }
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks that every embedded migration is applied, unchanged and complete. The engine
    /// calls this at start and refuses to run on a stale schema. Migrations applied by a newer
    /// engine are tolerated.
    ///
    /// # Errors
    /// [`MigrationError::Missing`] naming each missing migration (`<version> <description>`),
    /// [`MigrationError::Dirty`], [`MigrationError::Modified`] or a database error.
    pub async fn check_migrations(&self) -> Result<(), MigrationError> {
        let table_exists: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        let applied: Vec<(i64, bool, Vec<u8>)> = if table_exists {
            sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        let mut missing = Vec::new();
        for migration in MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()) {
            let label = format!("{} {}", migration.version, migration.description);
            match applied.iter().find(|(v, _, _)| *v == migration.version) {
                None => missing.push(label),
                Some((_, false, _)) => return Err(MigrationError::Dirty { migration: label }),
                Some((_, true, checksum)) if *checksum != *migration.checksum => {
                    return Err(MigrationError::Modified { migration: label });
                }
                Some(_) => {}
            }
        }
        if missing.is_empty() { Ok(()) } else { Err(MigrationError::Missing { missing }) }
    }

    async fn begin(&self) -> RecordsResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(backend)
    }
}

fn is_plain_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

type Tx = Transaction<'static, Postgres>;

/// Reads one `doc`, locking its row for the rest of the transaction.
async fn locked_doc<T: DeserializeOwned + Send + Unpin + 'static>(
    tx: &mut Tx,
    sql: &str,
    key: &[&str],
) -> RecordsResult<Option<T>> {
    let mut query = sqlx::query_scalar::<_, Json<T>>(sql);
    for k in key {
        query = query.bind(*k);
    }
    Ok(query.fetch_optional(&mut **tx).await.map_err(backend)?.map(|Json(doc)| doc))
}

async fn append(tx: &mut Tx, event: &OutboxEvent) -> RecordsResult<()> {
    sqlx::query(
        "INSERT INTO outbox (id, event_type, subject, data, created_at, actor) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(&event.subject)
    .bind(Json(&event.data))
    .bind(event.created_at)
    .bind(event.actor.as_ref().map(Json))
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn commit(tx: Tx) -> RecordsResult<()> {
    tx.commit().await.map_err(backend)
}

/// Writes `next` over the row of `table` keyed `key_column = key` at `old` version.
/// Zero rows means the lock was bypassed (never, with `FOR UPDATE`): reported as a conflict.
#[allow(clippy::too_many_arguments)]
async fn write_versioned<T: serde::Serialize + Sync>(
    tx: &mut Tx,
    kind: RecordKind,
    sql: &str,
    key: &str,
    old: u64,
    new: u64,
    doc: &T,
    deleted_at: Option<Option<DateTime<Utc>>>,
) -> RecordsResult<()> {
    let mut query = sqlx::query(sql)
        .bind(key)
        .bind(to_db_version(old))
        .bind(to_db_version(new))
        .bind(Json(doc));
    if let Some(deleted_at) = deleted_at {
        query = query.bind(deleted_at);
    }
    let done = query.execute(&mut **tx).await.map_err(backend)?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(RecordsError::VersionConflict {
            kind,
            key: key.to_owned(),
            expected: old,
            current: new,
        })
    }
}

const UPDATE_TEAM: &str = "UPDATE teams SET resource_version = $3, doc = $4, deleted_at = $5 \
                           WHERE slug = $1 AND resource_version = $2";
const UPDATE_ENVIRONMENT: &str = "UPDATE environments SET resource_version = $3, doc = $4 \
                                  WHERE name = $1 AND resource_version = $2";

#[async_trait]
impl Records for PgRecords {
    async fn get_team(&self, slug: &str) -> RecordsResult<Team> {
        sqlx::query_scalar::<_, Json<Team>>("SELECT doc FROM teams WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|Json(t)| t)
            .ok_or_else(|| RecordsError::not_found(RecordKind::Team, slug))
    }

    async fn list_teams(&self, after: Option<&str>, limit: usize) -> RecordsResult<Page<Team>> {
        let limit = page_size(limit);
        let rows = sqlx::query_scalar::<_, Json<Team>>(
            "SELECT doc FROM teams WHERE $1::text IS NULL OR slug > $1 ORDER BY slug LIMIT $2",
        )
        .bind(after)
        .bind(to_db_limit(limit + 1))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(paginate(rows, limit, |t| t.slug().to_owned()))
    }

    async fn create_team(&self, spec: TeamSpec, actor: &Actor) -> RecordsResult<Team> {
        RecordsError::validated(RecordKind::Team, spec.validate())?;
        let now = Utc::now();
        let team = Team::new(spec, now);
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO teams (slug, resource_version, doc) VALUES ($1, $2, $3) \
             ON CONFLICT (slug) DO NOTHING",
        )
        .bind(team.slug())
        .bind(to_db_version(team.resource_version))
        .bind(Json(&team))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            return Err(RecordsError::already_exists(RecordKind::Team, team.slug()));
        }
        append(&mut tx, &OutboxEvent::team(new_event_id(), Change::Created, &team, actor, now))
            .await?;
        commit(tx).await?;
        Ok(team)
    }

    async fn update_team(
        &self,
        spec: TeamSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team> {
        RecordsError::validated(RecordKind::Team, spec.validate())?;
        let mut tx = self.begin().await?;
        let current: Team =
            locked_doc(&mut tx, "SELECT doc FROM teams WHERE slug = $1 FOR UPDATE", &[&spec.slug])
                .await?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Team, &spec.slug))?;
        if current.is_deleted() {
            return Err(RecordsError::Tombstoned { kind: RecordKind::Team, key: spec.slug });
        }
        RecordsError::check_version(
            RecordKind::Team,
            &spec.slug,
            expected_version,
            current.resource_version,
        )?;
        let now = Utc::now();
        let next = current.updated(spec, now);
        write_versioned(
            &mut tx,
            RecordKind::Team,
            UPDATE_TEAM,
            next.slug(),
            current.resource_version,
            next.resource_version,
            &next,
            Some(None),
        )
        .await?;
        append(&mut tx, &OutboxEvent::team(new_event_id(), Change::Updated, &next, actor, now))
            .await?;
        commit(tx).await?;
        Ok(next)
    }

    async fn delete_team(
        &self,
        slug: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team> {
        let mut tx = self.begin().await?;
        let current: Team =
            locked_doc(&mut tx, "SELECT doc FROM teams WHERE slug = $1 FOR UPDATE", &[slug])
                .await?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Team, slug))?;
        RecordsError::check_version(
            RecordKind::Team,
            slug,
            expected_version,
            current.resource_version,
        )?;
        if current.is_deleted() {
            return Ok(current);
        }
        let now = Utc::now();
        let next = current.tombstoned(now);
        write_versioned(
            &mut tx,
            RecordKind::Team,
            UPDATE_TEAM,
            slug,
            current.resource_version,
            next.resource_version,
            &next,
            Some(next.deleted_at),
        )
        .await?;
        append(&mut tx, &OutboxEvent::team(new_event_id(), Change::Deleted, &next, actor, now))
            .await?;
        commit(tx).await?;
        Ok(next)
    }

    async fn set_team_status(&self, slug: &str, status: TeamStatus) -> RecordsResult<Team> {
        let mut tx = self.begin().await?;
        let current: Team =
            locked_doc(&mut tx, "SELECT doc FROM teams WHERE slug = $1 FOR UPDATE", &[slug])
                .await?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Team, slug))?;
        if current.status == status {
            return Ok(current);
        }
        // The document only: same resource version, no outbox row (status is not a change).
        let next = current.with_status(status);
        sqlx::query("UPDATE teams SET doc = $2 WHERE slug = $1")
            .bind(slug)
            .bind(Json(&next))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await?;
        Ok(next)
    }

    async fn purge_team(&self, slug: &str) -> RecordsResult<bool> {
        let mut tx = self.begin().await?;
        let Some(current) = locked_doc::<Team>(
            &mut tx,
            "SELECT doc FROM teams WHERE slug = $1 FOR UPDATE",
            &[slug],
        )
        .await?
        else {
            return Ok(false);
        };
        if !current.is_deleted() {
            return Err(RecordsError::NotTombstoned {
                kind: RecordKind::Team,
                key: slug.to_owned(),
            });
        }
        sqlx::query("DELETE FROM teams WHERE slug = $1")
            .bind(slug)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await?;
        Ok(true)
    }

    async fn get_environment(&self, name: &str) -> RecordsResult<Environment> {
        sqlx::query_scalar::<_, Json<Environment>>("SELECT doc FROM environments WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|Json(e)| e)
            .ok_or_else(|| RecordsError::not_found(RecordKind::Environment, name))
    }

    async fn list_environments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> RecordsResult<Page<Environment>> {
        let limit = page_size(limit);
        let rows = sqlx::query_scalar::<_, Json<Environment>>(
            "SELECT doc FROM environments WHERE $1::text IS NULL OR name > $1 \
             ORDER BY name LIMIT $2",
        )
        .bind(after)
        .bind(to_db_limit(limit + 1))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(paginate(rows, limit, |e| e.name().to_owned()))
    }

    async fn create_environment(
        &self,
        spec: EnvironmentSpec,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        RecordsError::validated(RecordKind::Environment, spec.validate())?;
        let now = Utc::now();
        let env = Environment::new(spec, now);
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO environments (name, resource_version, doc) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(env.name())
        .bind(to_db_version(env.resource_version))
        .bind(Json(&env))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            return Err(RecordsError::already_exists(RecordKind::Environment, env.name()));
        }
        append(
            &mut tx,
            &OutboxEvent::environment(new_event_id(), Change::Created, &env, actor, now),
        )
        .await?;
        commit(tx).await?;
        Ok(env)
    }

    async fn update_environment(
        &self,
        spec: EnvironmentSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        RecordsError::validated(RecordKind::Environment, spec.validate())?;
        let mut tx = self.begin().await?;
        let current: Environment = locked_doc(
            &mut tx,
            "SELECT doc FROM environments WHERE name = $1 FOR UPDATE",
            &[&spec.name],
        )
        .await?
        .ok_or_else(|| RecordsError::not_found(RecordKind::Environment, &spec.name))?;
        RecordsError::check_version(
            RecordKind::Environment,
            &spec.name,
            expected_version,
            current.resource_version,
        )?;
        let now = Utc::now();
        let next = current.updated(spec, now);
        write_versioned(
            &mut tx,
            RecordKind::Environment,
            UPDATE_ENVIRONMENT,
            next.name(),
            current.resource_version,
            next.resource_version,
            &next,
            None,
        )
        .await?;
        append(
            &mut tx,
            &OutboxEvent::environment(new_event_id(), Change::Updated, &next, actor, now),
        )
        .await?;
        commit(tx).await?;
        Ok(next)
    }

    async fn delete_environment(
        &self,
        name: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        let mut tx = self.begin().await?;
        let current: Environment =
            locked_doc(&mut tx, "SELECT doc FROM environments WHERE name = $1 FOR UPDATE", &[name])
                .await?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Environment, name))?;
        RecordsError::check_version(
            RecordKind::Environment,
            name,
            expected_version,
            current.resource_version,
        )?;
        sqlx::query("DELETE FROM environments WHERE name = $1 AND resource_version = $2")
            .bind(name)
            .bind(to_db_version(current.resource_version))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        append(
            &mut tx,
            &OutboxEvent::environment(new_event_id(), Change::Deleted, &current, actor, Utc::now()),
        )
        .await?;
        commit(tx).await?;
        Ok(current)
    }

    async fn upsert_namespace(&self, spec: NamespaceSpec) -> RecordsResult<NamespaceRecord> {
        RecordsError::validated(RecordKind::Namespace, spec.validate())?;
        // Creating a record has no row to lock: two first upserts of one key race, and the
        // loser (its insert did nothing) tries again and updates.
        for _ in 0..UPSERT_ATTEMPTS {
            if let Some(record) = self.try_upsert_namespace(&spec).await? {
                return Ok(record);
            }
        }
        Err(RecordsError::transient(format!(
            "namespace record {}/{} kept changing during the upsert",
            spec.team, spec.environment
        )))
    }

    async fn get_namespace(&self, team: &str, environment: &str) -> RecordsResult<NamespaceRecord> {
        sqlx::query_scalar::<_, Json<NamespaceRecord>>(
            "SELECT doc FROM namespace_records WHERE team = $1 AND environment = $2",
        )
        .bind(team)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|Json(n)| n)
        .ok_or_else(|| {
            RecordsError::not_found(RecordKind::Namespace, format!("{team}/{environment}"))
        })
    }

    async fn list_namespaces(
        &self,
        filter: &NamespaceFilter,
    ) -> RecordsResult<Vec<NamespaceRecord>> {
        let rows = sqlx::query_scalar::<_, Json<NamespaceRecord>>(
            "SELECT doc FROM namespace_records \
             WHERE ($1::text IS NULL OR environment = $1) \
               AND ($2::text IS NULL OR team = $2) \
               AND ($3::text IS NULL OR state = $3) \
             ORDER BY team, environment",
        )
        .bind(filter.environment.as_deref())
        .bind(filter.team.as_deref())
        .bind(filter.state.map(NamespaceState::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(|Json(n)| n).collect())
    }

    async fn set_namespace_state(
        &self,
        team: &str,
        environment: &str,
        state: NamespaceState,
    ) -> RecordsResult<NamespaceRecord> {
        self.change_namespace(team, environment, |current| current.with_state(state, Utc::now()))
            .await
    }

    async fn set_cluster_status(
        &self,
        team: &str,
        environment: &str,
        cluster: &str,
        status: ClusterStatus,
    ) -> RecordsResult<NamespaceRecord> {
        RecordsError::validated(RecordKind::Namespace, status.validate(cluster))?;
        self.change_namespace(team, environment, |current| {
            Some(current.with_cluster_status(cluster, status.clone()))
        })
        .await
    }

    async fn delete_namespace(&self, team: &str, environment: &str) -> RecordsResult<bool> {
        let done =
            sqlx::query("DELETE FROM namespace_records WHERE team = $1 AND environment = $2")
                .bind(team)
                .bind(environment)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn outbox_pending(&self, limit: usize) -> RecordsResult<Vec<OutboxEvent>> {
        let rows = sqlx::query(
            "SELECT id, event_type, subject, data, created_at, actor FROM outbox \
             ORDER BY seq LIMIT $1",
        )
        .bind(to_db_limit(page_size(limit)))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                Ok(OutboxEvent {
                    id: row.try_get("id")?,
                    event_type: row.try_get("event_type")?,
                    subject: row.try_get("subject")?,
                    data: row.try_get::<Json<serde_json::Value>, _>("data")?.0,
                    created_at: row.try_get("created_at")?,
                    actor: row.try_get::<Option<Json<Actor>>, _>("actor")?.map(|Json(a)| a),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn outbox_remove(&self, ids: &[String]) -> RecordsResult<()> {
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

impl PgRecords {
    /// One upsert attempt; `None` when another transaction created the record first.
    async fn try_upsert_namespace(
        &self,
        spec: &NamespaceSpec,
    ) -> RecordsResult<Option<NamespaceRecord>> {
        let mut tx = self.begin().await?;
        // FOR SHARE: the team cannot be tombstoned or purged until this commits.
        let team: Team =
            locked_doc(&mut tx, "SELECT doc FROM teams WHERE slug = $1 FOR SHARE", &[&spec.team])
                .await?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Team, &spec.team))?;
        if team.is_deleted() {
            return Err(RecordsError::Tombstoned {
                kind: RecordKind::Team,
                key: spec.team.clone(),
            });
        }
        let current: Option<NamespaceRecord> = locked_doc(
            &mut tx,
            "SELECT doc FROM namespace_records WHERE team = $1 AND environment = $2 FOR UPDATE",
            &[&spec.team, &spec.environment],
        )
        .await?;
        let now = Utc::now();
        let (next, sql) = match &current {
            None => (
                NamespaceRecord::new(spec.clone(), now),
                "INSERT INTO namespace_records \
                     (team, environment, name, state, resource_version, doc) \
                 VALUES ($1, $2, $3, $4, $6, $7) \
                 ON CONFLICT (team, environment) DO NOTHING",
            ),
            Some(current) => match current.upserted(spec.clone(), now) {
                Some(next) => (
                    next,
                    "UPDATE namespace_records SET state = $4, resource_version = $6, doc = $7 \
                     WHERE team = $1 AND environment = $2 AND name = $3 \
                       AND resource_version = $5",
                ),
                None => return Ok(Some(current.clone())),
            },
        };
        let done = sqlx::query(sql)
            .bind(&next.spec.team)
            .bind(&next.spec.environment)
            .bind(&next.name)
            .bind(next.state.as_str())
            .bind(current.as_ref().map(|c| to_db_version(c.resource_version)))
            .bind(to_db_version(next.resource_version))
            .bind(Json(&next))
            .execute(&mut *tx)
            .await;
        let done = match done {
            Ok(done) => done,
            Err(e) if constraint(&e) == Some("namespace_records_name_unique") => {
                drop(tx);
                // A racing first upsert of this same record trips the name constraint before
                // the primary key's ON CONFLICT: that is a lost race (try again), not a clash
                // with another team × environment.
                let owner: Option<(String, String)> = sqlx::query_as(
                    "SELECT team, environment FROM namespace_records WHERE name = $1",
                )
                .bind(&next.name)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
                return match owner {
                    Some((team, env)) if team != spec.team || env != spec.environment => {
                        Err(RecordsError::already_exists(RecordKind::Namespace, &next.name))
                    }
                    _ => Ok(None),
                };
            }
            Err(e) => return Err(backend(e)),
        };
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        commit(tx).await?;
        Ok(Some(next))
    }

    /// Locks the namespace record, applies `change` (`None`: nothing to do) and writes it.
    async fn change_namespace(
        &self,
        team: &str,
        environment: &str,
        change: impl FnOnce(&NamespaceRecord) -> Option<NamespaceRecord> + Send,
    ) -> RecordsResult<NamespaceRecord> {
        let mut tx = self.begin().await?;
        let current: NamespaceRecord = locked_doc(
            &mut tx,
            "SELECT doc FROM namespace_records WHERE team = $1 AND environment = $2 FOR UPDATE",
            &[team, environment],
        )
        .await?
        .ok_or_else(|| {
            RecordsError::not_found(RecordKind::Namespace, format!("{team}/{environment}"))
        })?;
        let Some(next) = change(&current) else {
            return Ok(current);
        };
        let done = sqlx::query(
            "UPDATE namespace_records SET state = $4, resource_version = $5, doc = $6 \
             WHERE team = $1 AND environment = $2 AND resource_version = $3",
        )
        .bind(team)
        .bind(environment)
        .bind(to_db_version(current.resource_version))
        .bind(next.state.as_str())
        .bind(to_db_version(next.resource_version))
        .bind(Json(&next))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() != 1 {
            return Err(RecordsError::VersionConflict {
                kind: RecordKind::Namespace,
                key: format!("{team}/{environment}"),
                expected: current.resource_version,
                current: next.resource_version,
            });
        }
        commit(tx).await?;
        Ok(next)
    }
}

fn paginate<T>(rows: Vec<Json<T>>, limit: usize, key_of: impl Fn(&T) -> String) -> Page<T> {
    let more = rows.len() > limit;
    let items: Vec<T> = rows.into_iter().take(limit).map(|Json(t)| t).collect();
    let next = if more { items.last().map(key_of) } else { None };
    Page { items, next }
}

fn to_db_version(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

fn to_db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn constraint(error: &sqlx::Error) -> Option<&str> {
    error.as_database_error().and_then(|e| e.constraint())
}

/// Lost connections, exhausted pools, serialization failures and deadlocks may pass on a
/// retry; everything else (bad SQL, constraint violations, undecodable rows) will not.
fn backend(error: sqlx::Error) -> RecordsError {
    let transient = match &error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception, 40001: serialization failure, 40P01: deadlock,
            // 53: insufficient resources, 57P01..03: shutdown / cannot connect now.
            code.starts_with("08")
                || code == "40001"
                || code == "40P01"
                || code.starts_with("53")
                || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    };
    if transient { RecordsError::transient(error) } else { RecordsError::permanent(error) }
}
