//! The PostgreSQL durable tier: tables in their own schema, created on first connection under
//! an advisory lock; a small pool of connections made lazily and remade when one breaks, so a
//! core starts (degraded) while the database is down and recovers when it returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chorus_proto::{ConversationSummary, Erased, Tier, Turn};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Commit, Conversation, Feedback, IdempotencyRecord, Meta, Owner, Result, StoreError, decode, encode};
use crate::config::PostgresConfig;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    tier SMALLINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    version BIGINT NOT NULL,
    context TEXT
);
CREATE INDEX IF NOT EXISTS conversations_owner ON conversations (tenant, user_id);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_ms);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (conversation_id, version)
);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id, request_id)
);
CREATE TABLE IF NOT EXISTS feedback (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_owner ON feedback (tenant, user_id);
";

/// A pool of connections to one database.
pub struct Postgres {
    pg: tokio_postgres::Config,
    /// With `sslmode=require`: TLS, the server verified.
    tls: Option<MakeRustlsConnect>,
    schema: String,
    connect_timeout: Duration,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("schema", &self.schema).field("pool", &self.slots.len()).finish()
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::durable(e)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn meta(r: &Row) -> Result<Meta> {
    let tier: i16 = r.get("tier");
    let context: Option<String> = r.get("context");
    Ok(Meta {
        id: r.get("id"),
        owner: Owner { tenant: r.get("tenant"), user: r.get("user_id") },
        tier: *Tier::ALL.get(tier as usize).ok_or_else(|| StoreError::Corrupt(format!("tier {tier}")))?,
        created_ms: u(r.get("created_ms")),
        updated_ms: u(r.get("updated_ms")),
        version: u(r.get("version")),
        context: context.map(|c| decode("context", c.as_bytes())).transpose()?,
    })
}

const META_COLS: &str = "id, tenant, user_id, tier, created_ms, updated_ms, version, context";

/// The row of conversation `$1` when it belongs to tenant `$2`, user `$3`.
fn owned_row() -> String {
    format!("SELECT {META_COLS} FROM conversations WHERE id = $1 AND tenant = $2 AND user_id = $3")
}

/// A read-only transaction on one snapshot (a conversation's row and its turns agree).
async fn snapshot(c: &mut Client) -> Result<tokio_postgres::Transaction<'_>> {
    c.build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(db)
}

fn text(v: &impl serde::Serialize) -> String {
    String::from_utf8(encode(v)).unwrap_or_default()
}

/// Connects with `tls` (or none) and drives the connection on its own task.
async fn open<T>(pg: &tokio_postgres::Config, tls: T, timeout: Duration) -> Result<Client>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    let (client, conn) = tokio::time::timeout(timeout, pg.connect(tls))
        .await
        .map_err(|_| StoreError::durable("connecting to PostgreSQL timed out"))?
        .map_err(db)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// A TLS connector that verifies the server against `ca_file`'s roots, else the system's.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<MakeRustlsConnect> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| StoreError::durable(format!("store.postgres.ca_file: {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(StoreError::durable(format!(
                    "store.postgres.ca_file: {}: no certificates",
                    path.display()
                )));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| StoreError::durable(format!("store.postgres.ca_file: {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(StoreError::durable(
                    "sslmode=require: no system root certificates; set store.postgres.ca_file",
                ));
            }
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::durable(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl Postgres {
    /// A pool for `cfg`; connects on first use.
    pub fn new(cfg: &PostgresConfig, timeout: Duration) -> Result<Self> {
        let mut pg: tokio_postgres::Config =
            cfg.url.parse().map_err(|e| StoreError::durable(format!("store.postgres.url: {e}")))?;
        pg.connect_timeout(timeout);
        pg.application_name("chorus-core");
        let tls = match pg.get_ssl_mode() {
            SslMode::Require => Some(tls_connector(cfg.ca_file.as_deref())?),
            _ => None,
        };
        Ok(Self {
            pg,
            tls,
            schema: cfg.schema.clone(),
            connect_timeout: timeout,
            slots: (0..cfg.pool).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    async fn connect(&self) -> Result<Client> {
        let mut client = match &self.tls {
            Some(tls) => open(&self.pg, tls.clone(), self.connect_timeout).await?,
            None => open(&self.pg, NoTls, self.connect_timeout).await?,
        };
        // The schema name is validated by the config (a-z, 0-9, _), so it can be spliced.
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock(hashtext('chorus-schema')); CREATE SCHEMA IF NOT EXISTS {s}; SET LOCAL search_path TO {s}; {SCHEMA}",
            s = self.schema
        ))
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        client.batch_execute(&format!("SET search_path TO {}", self.schema)).await.map_err(db)?;
        Ok(client)
    }

    /// A free connection (or the next one to free up), connected.
    async fn client(&self) -> Result<MutexGuard<'_, Option<Client>>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let free = (0..n).find_map(|k| self.slots[(start + k) % n].try_lock().ok());
        let mut g = match free {
            Some(g) => g,
            None => self.slots[start].lock().await,
        };
        if g.as_ref().is_none_or(|c| c.is_closed()) {
            *g = None;
            *g = Some(self.connect().await?);
        }
        Ok(g)
    }
}

/// The connection in a guard from [`Postgres::client`] (always present).
macro_rules! conn {
    ($g:ident) => {
        $g.as_mut().ok_or_else(|| StoreError::durable("no connection"))?
    };
}

impl Postgres {
    async fn meta(&self, owner: &Owner, id: &str) -> Result<Option<Meta>> {
        let mut g = self.client().await?;
        let c = conn!(g);
        let row = c.query_opt(&owned_row(), &[&id, &owner.tenant, &owner.user]).await.map_err(db)?;
        row.as_ref().map(meta).transpose()
    }

    pub async fn version(&self, owner: &Owner, id: &str) -> Result<Option<u64>> {
        Ok(self.meta(owner, id).await?.map(|m| m.version))
    }

    async fn turns(c: &impl tokio_postgres::GenericClient, ids: &[String]) -> Result<Vec<(String, Turn)>> {
        let rows = c
            .query(
                "SELECT conversation_id, body FROM turns WHERE conversation_id = ANY($1) ORDER BY conversation_id, version",
                &[&ids],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|r| Ok((r.get::<_, String>(0), decode("turn", r.get::<_, &str>(1).as_bytes())?))).collect()
    }

    pub async fn load(&self, owner: &Owner, id: &str) -> Result<Option<Conversation>> {
        let mut g = self.client().await?;
        let c = conn!(g);
        // One snapshot for the row and its turns.
        let tx = snapshot(c).await?;
        let row = tx.query_opt(&owned_row(), &[&id, &owner.tenant, &owner.user]).await.map_err(db)?;
        let Some(m) = row.as_ref().map(meta).transpose()? else { return Ok(None) };
        let turns = Self::turns(&tx, std::slice::from_ref(&m.id)).await?.into_iter().map(|(_, t)| t).collect();
        tx.commit().await.map_err(db)?;
        Ok(Some(m.with_turns(turns)))
    }

    pub async fn commit(&self, cm: &Commit) -> Result<()> {
        let mut g = self.client().await?;
        let c = conn!(g);
        let o = &cm.owner;
        let tx = c.transaction().await.map_err(db)?;
        let dup = tx
            .query_opt(
                "SELECT conversation_id, version FROM idempotency WHERE tenant = $1 AND user_id = $2 AND request_id = $3",
                &[&o.tenant, &o.user, &cm.turn.request_id],
            )
            .await
            .map_err(db)?;
        if let Some(r) = dup {
            return Err(StoreError::Duplicate {
                request_id: cm.turn.request_id.clone(),
                conversation_id: r.get(0),
                version: u(r.get(1)),
            });
        }
        let context = cm.context.as_ref().map(text);
        let tier = cm.tier.index() as i16;
        let now = i(cm.now_ms);
        let version = match cm.base {
            None => {
                let n = tx
                    .execute(
                        "INSERT INTO conversations (id, tenant, user_id, tier, created_ms, updated_ms, version, context)
                         VALUES ($1, $2, $3, $4, $5, $5, 1, $6) ON CONFLICT (id) DO NOTHING",
                        &[&cm.conversation_id, &o.tenant, &o.user, &tier, &now, &context],
                    )
                    .await
                    .map_err(db)?;
                if n == 0 {
                    return Err(StoreError::Conflict { id: cm.conversation_id.clone(), base: 0, current: 1 });
                }
                1
            }
            Some(base) => {
                // The row lock taken here orders concurrent appends: the second one re-reads
                // the version after the first commits and matches nothing.
                let n = tx
                    .execute(
                        "UPDATE conversations SET version = version + 1, updated_ms = $4, tier = $5, context = $6
                         WHERE id = $1 AND tenant = $2 AND user_id = $3 AND version = $7",
                        &[&cm.conversation_id, &o.tenant, &o.user, &now, &tier, &context, &i(base)],
                    )
                    .await
                    .map_err(db)?;
                if n == 0 {
                    let cur = tx
                        .query_opt(
                            "SELECT version FROM conversations WHERE id = $1 AND tenant = $2 AND user_id = $3",
                            &[&cm.conversation_id, &o.tenant, &o.user],
                        )
                        .await
                        .map_err(db)?;
                    return Err(match cur {
                        None => StoreError::NotFound,
                        Some(r) => StoreError::Conflict { id: cm.conversation_id.clone(), base, current: u(r.get(0)) },
                    });
                }
                base + 1
            }
        };
        tx.execute(
            "INSERT INTO turns (conversation_id, version, body) VALUES ($1, $2, $3)",
            &[&cm.conversation_id, &i(version), &text(&cm.turn)],
        )
        .await
        .map_err(db)?;
        let n = tx
            .execute(
                "INSERT INTO idempotency (tenant, user_id, request_id, conversation_id, version, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&o.tenant, &o.user, &cm.turn.request_id, &cm.conversation_id, &i(version), &now],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            // The same request committed concurrently on another connection.
            return Err(StoreError::Duplicate {
                request_id: cm.turn.request_id.clone(),
                conversation_id: cm.conversation_id.clone(),
                version,
            });
        }
        tx.commit().await.map_err(db)
    }

    pub async fn idempotent(&self, owner: &Owner, request_id: &str) -> Result<Option<IdempotencyRecord>> {
        let mut g = self.client().await?;
        let c = conn!(g);
        let row = c
            .query_opt(
                "SELECT conversation_id, version, created_ms FROM idempotency WHERE tenant = $1 AND user_id = $2 AND request_id = $3",
                &[&owner.tenant, &owner.user, &request_id],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| IdempotencyRecord {
            request_id: request_id.to_string(),
            conversation_id: r.get(0),
            version: u(r.get(1)),
            created_ms: u(r.get(2)),
        }))
    }

    pub async fn list(&self, owner: &Owner, limit: usize) -> Result<Vec<ConversationSummary>> {
        let mut g = self.client().await?;
        let c = conn!(g);
        let rows = c
            .query(
                &format!(
                    "SELECT {META_COLS} FROM conversations WHERE tenant = $1 AND user_id = $2 ORDER BY updated_ms DESC, id LIMIT $3"
                ),
                &[&owner.tenant, &owner.user, &i(limit as u64)],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|r| Ok(meta(r)?.with_turns(Vec::new()).summary())).collect()
    }

    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<bool> {
        let mut g = self.client().await?;
        let c = conn!(g);
        // Turns and idempotency records go with the row (ON DELETE CASCADE).
        let n = c
            .execute(
                "DELETE FROM conversations WHERE id = $1 AND tenant = $2 AND user_id = $3",
                &[&id, &owner.tenant, &owner.user],
            )
            .await
            .map_err(db)?;
        Ok(n > 0)
    }

    pub async fn erase(&self, owner: &Owner) -> Result<(Vec<String>, Erased)> {
        let mut g = self.client().await?;
        let c = conn!(g);
        let tx = c.transaction().await.map_err(db)?;
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&owner.tenant, &owner.user];
        let idem = tx.execute("DELETE FROM idempotency WHERE tenant = $1 AND user_id = $2", &args).await.map_err(db)?;
        let feedback =
            tx.execute("DELETE FROM feedback WHERE tenant = $1 AND user_id = $2", &args).await.map_err(db)?;
        let rows = tx
            .query("DELETE FROM conversations WHERE tenant = $1 AND user_id = $2 RETURNING id", &args)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let erased = Erased { conversations: ids.len() as u64, feedback, idempotency_records: idem };
        Ok((ids, erased))
    }

    pub async fn export(&self, owner: &Owner) -> Result<(Vec<Conversation>, Vec<Feedback>, Vec<IdempotencyRecord>)> {
        let mut g = self.client().await?;
        let c = conn!(g);
        let tx = snapshot(c).await?;
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&owner.tenant, &owner.user];
        let rows = tx
            .query(
                &format!(
                    "SELECT {META_COLS} FROM conversations WHERE tenant = $1 AND user_id = $2 ORDER BY created_ms, id"
                ),
                &args,
            )
            .await
            .map_err(db)?;
        let metas: Vec<Meta> = rows.iter().map(meta).collect::<Result<_>>()?;
        let ids: Vec<String> = metas.iter().map(|m| m.id.clone()).collect();
        let mut turns = Self::turns(&tx, &ids).await?;
        let mut convs = Vec::with_capacity(metas.len());
        for m in metas {
            let mine: Vec<Turn> = turns.extract_if(.., |(id, _)| *id == m.id).map(|(_, t)| t).collect();
            convs.push(m.with_turns(mine));
        }
        let feedback = tx
            .query("SELECT body FROM feedback WHERE tenant = $1 AND user_id = $2 ORDER BY seq", &args)
            .await
            .map_err(db)?
            .iter()
            .map(|r| decode("feedback", r.get::<_, &str>(0).as_bytes()))
            .collect::<Result<_>>()?;
        let records = tx
            .query(
                "SELECT request_id, conversation_id, version, created_ms FROM idempotency
                 WHERE tenant = $1 AND user_id = $2 ORDER BY created_ms, request_id",
                &args,
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| IdempotencyRecord {
                request_id: r.get(0),
                conversation_id: r.get(1),
                version: u(r.get(2)),
                created_ms: u(r.get(3)),
            })
            .collect();
        tx.commit().await.map_err(db)?;
        Ok((convs, feedback, records))
    }

    pub async fn sweep(&self, cutoffs: [Option<u64>; 4], limit: usize) -> Result<Vec<String>> {
        let mut g = self.client().await?;
        let c = conn!(g);
        // -1: no conversation of that tier is ever old enough.
        let cut = cutoffs.map(|c| c.map_or(-1, i));
        let rows = c
            .query(
                "DELETE FROM conversations WHERE id IN (
                     SELECT id FROM conversations
                     WHERE (tier = 0 AND updated_ms < $1) OR (tier = 1 AND updated_ms < $2)
                        OR (tier = 2 AND updated_ms < $3) OR (tier = 3 AND updated_ms < $4)
                     ORDER BY updated_ms LIMIT $5
                 ) RETURNING id",
                &[&cut[0], &cut[1], &cut[2], &cut[3], &i(limit as u64)],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn feedback_append(&self, f: &Feedback) -> Result<()> {
        let mut g = self.client().await?;
        let c = conn!(g);
        c.execute(
            "INSERT INTO feedback (tenant, user_id, body) VALUES ($1, $2, $3)",
            &[&f.owner.tenant, &f.owner.user, &text(f)],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    pub async fn feedback_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Feedback)>> {
        let mut g = self.client().await?;
        let c = conn!(g);
        let rows = c
            .query(
                "SELECT seq, body FROM feedback WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&i(after), &i(limit as u64)],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|r| Ok((u(r.get(0)), decode("feedback", r.get::<_, &str>(1).as_bytes())?))).collect()
    }
}
