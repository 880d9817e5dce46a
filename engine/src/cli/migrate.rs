//! `engine migrate`: applies the records store's embedded PostgreSQL migrations.

use std::process::ExitCode;

use crate::config::{Config, StoreKind};
use crate::store;

pub async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    if config.store != StoreKind::Postgres {
        eprintln!("store is {:?}: nothing to migrate (sled needs no migrations)", config.store);
        return Ok(ExitCode::SUCCESS);
    }
    let pg = store::connect_postgres(&config).await?;
    pg.migrate().await?;
    pg.check_migrations().await?;
    println!(
        "migrations applied{}",
        config.database_schema.as_deref().map(|s| format!(" in schema {s}")).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
