//! The embedded records store on sled.
//!
//! # Layout
//! Trees in the engine's database, all prefixed `records_`:
//! - `records_teams`: slug → team (JSON)
//! - `records_environments`: name → environment (JSON)
//! - `records_namespaces`: `team \0 environment` → namespace record (JSON); the `\0` keeps
//!   the order by team, then environment (a team `a` sorts before `a-b`).
//! - `records_namespace_names`: namespace name → `team \0 environment`, so that two records
//!   can never claim the same Kubernetes namespace.
//! - `records_outbox`: big-endian sequence (sled's monotonic `generate_id`) → event (JSON)
//! - `records_outbox_ids`: event id → sequence, for removal by id.

use std::sync::{Arc, Mutex};

use ::sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, Transactional,
    TransactionalTree,
};
use ::sled::{Db, IVec, Tree};
use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use workflows::records::{
    Actor, Change, ClusterStatus, Environment, EnvironmentSpec, NamespaceFilter, NamespaceRecord,
    NamespaceSpec, NamespaceState, OutboxEvent, Page, RecordKind, Records, RecordsError,
    RecordsResult, Team, TeamSpec, TeamStatus, page_size,
};

use super::new_event_id;

/// The records store on a sled database shared with the rest of the engine.
///
/// # Guarantees
/// - Each mutation is one sled transaction over every tree it touches (the record, the
///   namespace-name index, the outbox), so a crash leaves all of it or none of it.
/// - A mutation returns `Ok` only after `Db::flush`: the change and its outbox event are on
///   disk. (A concurrent `get`/`list` can see a change a moment before that flush completes;
///   sled has no read isolation from durability.)
/// - `outbox_pending` returns only durable events: it reads under the writer lock, which a
///   mutation holds until its flush has completed, so the relay never publishes an event whose
///   change a crash could still lose.
/// - Mutations through one `SledRecords` (and its clones) are serialised, so multi-key checks
///   (a purge's scan of namespace records) see a stable view. Open one per database.
#[derive(Clone)]
pub struct SledRecords {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    teams: Tree,
    environments: Tree,
    namespaces: Tree,
    namespace_names: Tree,
    outbox: Tree,
    outbox_ids: Tree,
    /// Held across a mutation's reads, transaction *and flush*, and by `outbox_pending`: an
    /// outbox entry becomes visible to the relay only once it is on disk. sled runs every
    /// transaction under one global lock anyway; what this costs is that concurrent mutations
    /// flush one after the other (records change at human pace).
    writer: Mutex<()>,
}

type TxResult<T> = ConflictableTransactionResult<T, RecordsError>;

impl SledRecords {
    /// Opens (creating if needed) the `records_*` trees in `db`.
    ///
    /// # Errors
    /// `Backend` when sled cannot open a tree.
    pub fn open(db: &Db) -> RecordsResult<Self> {
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        Ok(SledRecords {
            inner: Arc::new(Inner {
                db: db.clone(),
                teams: tree("records_teams")?,
                environments: tree("records_environments")?,
                namespaces: tree("records_namespaces")?,
                namespace_names: tree("records_namespace_names")?,
                outbox: tree("records_outbox")?,
                outbox_ids: tree("records_outbox_ids")?,
                writer: Mutex::new(()),
            }),
        })
    }

    /// Runs `f` on a blocking thread: sled's calls block on I/O.
    async fn blocking<T, F>(&self, f: F) -> RecordsResult<T>
    where
        F: FnOnce(&Inner) -> RecordsResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(RecordsError::permanent)?
    }
}

impl Inner {
    /// Runs the mutation `f` and flushes, both under the writer lock: until the flush is done
    /// no reader of the outbox (see [`Inner::outbox_pending`]) can see what `f` wrote.
    fn mutate<T>(&self, f: impl FnOnce(&Self) -> RecordsResult<T>) -> RecordsResult<T> {
        let _guard = self.lock();
        let out = f(self)?;
        fault::before_record_flush();
        self.db.flush().map_err(backend)?;
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The oldest `limit` outbox events, read under the writer lock so that every one of them
    /// is durable (a mutation flushes before it lets go of the lock).
    fn outbox_pending(&self, limit: usize) -> RecordsResult<Vec<OutboxEvent>> {
        let _guard = self.lock();
        self.outbox
            .iter()
            .take(page_size(limit))
            .map(|entry| decode(&entry.map_err(backend)?.1))
            .collect()
    }

    fn get<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> RecordsResult<Option<T>> {
        tree.get(key).map_err(backend)?.map(|v| decode(&v)).transpose()
    }

    fn page<T: DeserializeOwned>(
        tree: &Tree,
        after: Option<&str>,
        limit: usize,
        key_of: impl Fn(&T) -> &str,
    ) -> RecordsResult<Page<T>> {
        use std::ops::Bound::{Excluded, Unbounded};
        let limit = page_size(limit);
        let start = after.map_or(Unbounded, |a| Excluded(a.as_bytes().to_vec()));
        let mut items = Vec::with_capacity(limit);
        let mut more = false;
        for entry in tree.range::<Vec<u8>, _>((start, Unbounded)) {
            let (_, value) = entry.map_err(backend)?;
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(decode::<T>(&value)?);
        }
        let next = if more { items.last().map(|i| key_of(i).to_owned()) } else { None };
        Ok(Page { items, next })
    }

    fn update_namespace(
        &self,
        team: &str,
        environment: &str,
        change: impl Fn(&NamespaceRecord) -> Option<NamespaceRecord>,
    ) -> RecordsResult<NamespaceRecord> {
        let key = namespace_key(team, environment);
        let label = format!("{team}/{environment}");
        self.mutate(|s| {
            transact(&s.namespaces, |ns| {
                let current: NamespaceRecord = tx_get(ns, &key)?.ok_or_else(|| {
                    ConflictableTransactionError::Abort(RecordsError::not_found(
                        RecordKind::Namespace,
                        label.clone(),
                    ))
                })?;
                match change(&current) {
                    Some(next) => {
                        tx_put(ns, &key, &next)?;
                        Ok(next)
                    }
                    None => Ok(current),
                }
            })
        })
    }
}

#[async_trait]
impl Records for SledRecords {
    async fn get_team(&self, slug: &str) -> RecordsResult<Team> {
        let slug = slug.to_owned();
        self.blocking(move |s| {
            Inner::get(&s.teams, slug.as_bytes())?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Team, slug))
        })
        .await
    }

    async fn list_teams(&self, after: Option<&str>, limit: usize) -> RecordsResult<Page<Team>> {
        let after = after.map(str::to_owned);
        self.blocking(move |s| Inner::page(&s.teams, after.as_deref(), limit, Team::slug)).await
    }

    async fn create_team(&self, spec: TeamSpec, actor: &Actor) -> RecordsResult<Team> {
        RecordsError::validated(RecordKind::Team, spec.validate())?;
        let actor = actor.clone();
        self.blocking(move |s| {
            s.mutate(|s| {
                let now = Utc::now();
                let team = Team::new(spec, now);
                let event = OutboxEvent::team(new_event_id(), Change::Created, &team, &actor, now);
                let key = team.slug().as_bytes();
                (&s.teams, &s.outbox, &s.outbox_ids)
                    .transaction(|(teams, outbox, ids)| {
                        if teams.get(key)?.is_some() {
                            return abort(RecordsError::already_exists(
                                RecordKind::Team,
                                team.slug(),
                            ));
                        }
                        tx_put(teams, key, &team)?;
                        append(outbox, ids, &event)
                    })
                    .map_err(from_tx)?;
                Ok(team)
            })
        })
        .await
    }

    async fn update_team(
        &self,
        spec: TeamSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team> {
        RecordsError::validated(RecordKind::Team, spec.validate())?;
        let actor = actor.clone();
        self.blocking(move |s| {
            s.mutate(|s| {
                let now = Utc::now();
                let event_id = new_event_id();
                let key = spec.slug.as_bytes();
                (&s.teams, &s.outbox, &s.outbox_ids)
                    .transaction(|(teams, outbox, ids)| {
                        let current: Team = tx_get(teams, key)?.ok_or_else(|| {
                            ConflictableTransactionError::Abort(RecordsError::not_found(
                                RecordKind::Team,
                                spec.slug.clone(),
                            ))
                        })?;
                        if current.is_deleted() {
                            return abort(RecordsError::Tombstoned {
                                kind: RecordKind::Team,
                                key: spec.slug.clone(),
                            });
                        }
                        RecordsError::check_version(
                            RecordKind::Team,
                            &spec.slug,
                            expected_version,
                            current.resource_version,
                        )
                        .map_err(ConflictableTransactionError::Abort)?;
                        let next = current.updated(spec.clone(), now);
                        tx_put(teams, key, &next)?;
                        let event = OutboxEvent::team(
                            event_id.clone(),
                            Change::Updated,
                            &next,
                            &actor,
                            now,
                        );
                        append(outbox, ids, &event)?;
                        Ok(next)
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }

    async fn delete_team(
        &self,
        slug: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Team> {
        let slug = slug.to_owned();
        let actor = actor.clone();
        self.blocking(move |s| {
            s.mutate(|s| {
                let now = Utc::now();
                let event_id = new_event_id();
                let key = slug.as_bytes();
                (&s.teams, &s.outbox, &s.outbox_ids)
                    .transaction(|(teams, outbox, ids)| {
                        let current: Team = tx_get(teams, key)?.ok_or_else(|| {
                            ConflictableTransactionError::Abort(RecordsError::not_found(
                                RecordKind::Team,
                                slug.clone(),
                            ))
                        })?;
                        RecordsError::check_version(
                            RecordKind::Team,
                            &slug,
                            expected_version,
                            current.resource_version,
                        )
                        .map_err(ConflictableTransactionError::Abort)?;
                        if current.is_deleted() {
                            return Ok(current);
                        }
                        let next = current.tombstoned(now);
                        tx_put(teams, key, &next)?;
                        let event = OutboxEvent::team(
                            event_id.clone(),
                            Change::Deleted,
                            &next,
                            &actor,
                            now,
                        );
                        append(outbox, ids, &event)?;
                        Ok(next)
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }

    async fn set_team_status(&self, slug: &str, status: TeamStatus) -> RecordsResult<Team> {
        let slug = slug.to_owned();
        self.blocking(move |s| {
            s.mutate(|s| {
                // The team tree alone: status is not announced through the outbox.
                transact(&s.teams, |teams| {
                    let current: Team = tx_get(teams, slug.as_bytes())?.ok_or_else(|| {
                        ConflictableTransactionError::Abort(RecordsError::not_found(
                            RecordKind::Team,
                            slug.clone(),
                        ))
                    })?;
                    if current.status == status {
                        return Ok(current);
                    }
                    let next = current.with_status(status.clone());
                    tx_put(teams, slug.as_bytes(), &next)?;
                    Ok(next)
                })
            })
        })
        .await
    }

    async fn purge_team(&self, slug: &str) -> RecordsResult<bool> {
        let slug = slug.to_owned();
        self.blocking(move |s| {
            s.mutate(|s| {
                // Under the writer lock no namespace record can appear between this scan and
                // the transaction; and none is ever added to a tombstoned team.
                let mut prefix = slug.as_bytes().to_vec();
                prefix.push(0);
                let mut doomed: Vec<(IVec, String)> = Vec::new();
                for entry in s.namespaces.scan_prefix(&prefix) {
                    let (key, value) = entry.map_err(backend)?;
                    doomed.push((key, decode::<NamespaceRecord>(&value)?.name));
                }
                (&s.teams, &s.namespaces, &s.namespace_names)
                    .transaction(|(teams, namespaces, names)| {
                        let Some(team) = tx_get::<Team>(teams, slug.as_bytes())? else {
                            return Ok(false);
                        };
                        if !team.is_deleted() {
                            return abort(RecordsError::NotTombstoned {
                                kind: RecordKind::Team,
                                key: slug.clone(),
                            });
                        }
                        teams.remove(slug.as_bytes())?;
                        for (key, name) in &doomed {
                            namespaces.remove(key)?;
                            names.remove(name.as_bytes())?;
                        }
                        Ok(true)
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }

    async fn get_environment(&self, name: &str) -> RecordsResult<Environment> {
        let name = name.to_owned();
        self.blocking(move |s| {
            Inner::get(&s.environments, name.as_bytes())?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Environment, name))
        })
        .await
    }

    async fn list_environments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> RecordsResult<Page<Environment>> {
        let after = after.map(str::to_owned);
        self.blocking(move |s| {
            Inner::page(&s.environments, after.as_deref(), limit, Environment::name)
        })
        .await
    }

    async fn create_environment(
        &self,
        spec: EnvironmentSpec,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        RecordsError::validated(RecordKind::Environment, spec.validate())?;
        let actor = actor.clone();
        self.blocking(move |s| {
            s.mutate(|s| {
                let now = Utc::now();
                let env = Environment::new(spec, now);
                let event =
                    OutboxEvent::environment(new_event_id(), Change::Created, &env, &actor, now);
                let key = env.name().as_bytes();
                (&s.environments, &s.outbox, &s.outbox_ids)
                    .transaction(|(envs, outbox, ids)| {
                        if envs.get(key)?.is_some() {
                            return abort(RecordsError::already_exists(
                                RecordKind::Environment,
                                env.name(),
                            ));
                        }
                        tx_put(envs, key, &env)?;
                        append(outbox, ids, &event)
                    })
                    .map_err(from_tx)?;
                Ok(env)
            })
        })
        .await
    }

    async fn update_environment(
        &self,
        spec: EnvironmentSpec,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        RecordsError::validated(RecordKind::Environment, spec.validate())?;
        let actor = actor.clone();
        self.blocking(move |s| {
            s.mutate(|s| {
                let now = Utc::now();
                let event_id = new_event_id();
                let key = spec.name.as_bytes();
                (&s.environments, &s.outbox, &s.outbox_ids)
                    .transaction(|(envs, outbox, ids)| {
                        let current: Environment = tx_get(envs, key)?.ok_or_else(|| {
                            ConflictableTransactionError::Abort(RecordsError::not_found(
                                RecordKind::Environment,
                                spec.name.clone(),
                            ))
                        })?;
                        RecordsError::check_version(
                            RecordKind::Environment,
                            &spec.name,
                            expected_version,
                            current.resource_version,
                        )
                        .map_err(ConflictableTransactionError::Abort)?;
                        let next = current.updated(spec.clone(), now);
                        tx_put(envs, key, &next)?;
                        let event = OutboxEvent::environment(
                            event_id.clone(),
                            Change::Updated,
                            &next,
                            &actor,
                            now,
                        );
                        append(outbox, ids, &event)?;
                        Ok(next)
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }

    async fn delete_environment(
        &self,
        name: &str,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> RecordsResult<Environment> {
        let name = name.to_owned();
        let actor = actor.clone();
        self.blocking(move |s| {
            s.mutate(|s| {
                let now = Utc::now();
                let event_id = new_event_id();
                let key = name.as_bytes();
                (&s.environments, &s.outbox, &s.outbox_ids)
                    .transaction(|(envs, outbox, ids)| {
                        let current: Environment = tx_get(envs, key)?.ok_or_else(|| {
                            ConflictableTransactionError::Abort(RecordsError::not_found(
                                RecordKind::Environment,
                                name.clone(),
                            ))
                        })?;
                        RecordsError::check_version(
                            RecordKind::Environment,
                            &name,
                            expected_version,
                            current.resource_version,
                        )
                        .map_err(ConflictableTransactionError::Abort)?;
                        envs.remove(key)?;
                        let event = OutboxEvent::environment(
                            event_id.clone(),
                            Change::Deleted,
                            &current,
                            &actor,
                            now,
                        );
                        append(outbox, ids, &event)?;
                        Ok(current)
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }

    async fn upsert_namespace(&self, spec: NamespaceSpec) -> RecordsResult<NamespaceRecord> {
        RecordsError::validated(RecordKind::Namespace, spec.validate())?;
        self.blocking(move |s| {
            s.mutate(|s| {
                let now = Utc::now();
                let key = namespace_key(&spec.team, &spec.environment);
                let name = spec.namespace_name();
                (&s.teams, &s.namespaces, &s.namespace_names)
                    .transaction(|(teams, namespaces, names)| {
                        match tx_get::<Team>(teams, spec.team.as_bytes())? {
                            None => {
                                return abort(RecordsError::not_found(
                                    RecordKind::Team,
                                    spec.team.clone(),
                                ));
                            }
                            Some(team) if team.is_deleted() => {
                                return abort(RecordsError::Tombstoned {
                                    kind: RecordKind::Team,
                                    key: spec.team.clone(),
                                });
                            }
                            Some(_) => {}
                        }
                        if let Some(owner) = names.get(name.as_bytes())?
                            && owner.as_ref() != key.as_slice()
                        {
                            return abort(RecordsError::already_exists(
                                RecordKind::Namespace,
                                name.clone(),
                            ));
                        }
                        let next = match tx_get::<NamespaceRecord>(namespaces, &key)? {
                            None => NamespaceRecord::new(spec.clone(), now),
                            Some(current) => match current.upserted(spec.clone(), now) {
                                Some(next) => next,
                                None => return Ok(current),
                            },
                        };
                        tx_put(namespaces, &key, &next)?;
                        names.insert(name.as_bytes(), key.as_slice())?;
                        Ok(next)
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }

    async fn get_namespace(&self, team: &str, environment: &str) -> RecordsResult<NamespaceRecord> {
        let key = namespace_key(team, environment);
        let label = format!("{team}/{environment}");
        self.blocking(move |s| {
            Inner::get(&s.namespaces, &key)?
                .ok_or_else(|| RecordsError::not_found(RecordKind::Namespace, label))
        })
        .await
    }

    async fn list_namespaces(
        &self,
        filter: &NamespaceFilter,
    ) -> RecordsResult<Vec<NamespaceRecord>> {
        let filter = filter.clone();
        self.blocking(move |s| {
            // Namespace records number teams × environments: a scan (by team prefix when
            // given) is cheap enough that no environment index is kept.
            let entries = match &filter.team {
                Some(team) => {
                    let mut prefix = team.as_bytes().to_vec();
                    prefix.push(0);
                    s.namespaces.scan_prefix(prefix)
                }
                None => s.namespaces.iter(),
            };
            let mut out = Vec::new();
            for entry in entries {
                let (_, value) = entry.map_err(backend)?;
                let record: NamespaceRecord = decode(&value)?;
                if filter.matches(&record) {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn set_namespace_state(
        &self,
        team: &str,
        environment: &str,
        state: NamespaceState,
    ) -> RecordsResult<NamespaceRecord> {
        let (team, environment) = (team.to_owned(), environment.to_owned());
        self.blocking(move |s| {
            s.update_namespace(&team, &environment, |current| current.with_state(state, Utc::now()))
        })
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
        let (team, environment, cluster) =
            (team.to_owned(), environment.to_owned(), cluster.to_owned());
        self.blocking(move |s| {
            s.update_namespace(&team, &environment, |current| {
                Some(current.with_cluster_status(&cluster, status.clone()))
            })
        })
        .await
    }

    async fn delete_namespace(&self, team: &str, environment: &str) -> RecordsResult<bool> {
        let key = namespace_key(team, environment);
        self.blocking(move |s| {
            s.mutate(|s| {
                (&s.namespaces, &s.namespace_names)
                    .transaction(|(namespaces, names)| {
                        match tx_get::<NamespaceRecord>(namespaces, &key)? {
                            None => Ok(false),
                            Some(record) => {
                                namespaces.remove(key.as_slice())?;
                                names.remove(record.name.as_bytes())?;
                                Ok(true)
                            }
                        }
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }

    async fn outbox_pending(&self, limit: usize) -> RecordsResult<Vec<OutboxEvent>> {
        self.blocking(move |s| s.outbox_pending(limit)).await
    }

    async fn outbox_remove(&self, ids: &[String]) -> RecordsResult<()> {
        let ids = ids.to_vec();
        self.blocking(move |s| {
            s.mutate(|s| {
                (&s.outbox, &s.outbox_ids)
                    .transaction(|(outbox, by_id)| {
                        for id in &ids {
                            if let Some(seq) = by_id.remove(id.as_bytes())? {
                                outbox.remove(seq)?;
                            }
                        }
                        Ok(())
                    })
                    .map_err(from_tx)
            })
        })
        .await
    }
}

fn namespace_key(team: &str, environment: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(team.len() + 1 + environment.len());
    key.extend_from_slice(team.as_bytes());
    key.push(0);
    key.extend_from_slice(environment.as_bytes());
    key
}

/// Appends `event` to the outbox inside the caller's transaction.
fn append(
    outbox: &TransactionalTree,
    ids: &TransactionalTree,
    event: &OutboxEvent,
) -> TxResult<()> {
    let seq = outbox.generate_id()?.to_be_bytes();
    tx_put(outbox, &seq, event)?;
    ids.insert(event.id.as_bytes(), &seq)?;
    Ok(())
}

fn tx_get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => decode(&v).map(Some).map_err(ConflictableTransactionError::Abort),
    }
}

fn tx_put<T: Serialize>(tree: &TransactionalTree, key: &[u8], value: &T) -> TxResult<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ConflictableTransactionError::Abort(RecordsError::permanent(e)))?;
    tree.insert(key, bytes)?;
    Ok(())
}

fn abort<T>(error: RecordsError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

fn transact<T>(tree: &Tree, f: impl Fn(&TransactionalTree) -> TxResult<T>) -> RecordsResult<T> {
    tree.transaction(|t| f(t)).map_err(from_tx)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> RecordsResult<T> {
    serde_json::from_slice(bytes).map_err(RecordsError::permanent)
}

fn from_tx(error: TransactionError<RecordsError>) -> RecordsError {
    match error {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}

/// The crash test's fault point between a mutation's write and its flush. **A test hook, not a
/// feature**: production never sets `MUSTER_FAULT` (the engine's other fault points are in
/// `engine::fault`; this crate cannot reach them).
pub mod fault {
    use std::sync::OnceLock;
    use std::time::Duration;

    /// The environment variable naming the active fault point (as `engine::fault::ENV`).
    pub const ENV: &str = "MUSTER_FAULT";
    /// Stall a mutation for [`STALL`] between its write and its flush, then abort the process
    /// (`std::process::abort`: no cleanup, no flush, like `kill -9`). The stall gives a
    /// concurrent reader of the outbox the time to see what the crash will lose, if it can.
    pub const BEFORE_RECORD_FLUSH: &str = "before-record-flush";
    /// How long the fault point holds the mutation before aborting.
    pub const STALL: Duration = Duration::from_millis(500);

    /// The `before-record-flush` fault point.
    pub(super) fn before_record_flush() {
        static FAULT: OnceLock<bool> = OnceLock::new();
        let active =
            *FAULT.get_or_init(|| std::env::var(ENV).is_ok_and(|v| v == BEFORE_RECORD_FLUSH));
        if active {
            eprintln!(
                "{ENV}={BEFORE_RECORD_FLUSH}: aborting between a records write and its flush"
            );
            std::thread::sleep(STALL);
            std::process::abort();
        }
    }
}

/// I/O failures may pass; corruption, bugs and unsupported operations will not.
fn backend(error: ::sled::Error) -> RecordsError {
    match error {
        ::sled::Error::Io(_) => RecordsError::transient(error),
        _ => RecordsError::permanent(error),
    }
}
