//! The embedded durable tier: one redb file.
//!
//! Why redb: it is a pure-Rust, ACID, copy-on-write B-tree store with a stable file format
//! (1.0 since 2023, actively maintained), crash-safe without a write-ahead log to replay, with
//! MVCC readers that never block the single writer. A commit with `Durability::Immediate`
//! (the default) is on disk when `commit` returns, which is exactly the "durable before `Done`"
//! contract. SQLite would serve too but brings a C build; sled never reached a stable format.
//!
//! Tables (keys are byte strings; an owner prefix is the length-prefixed tenant and user, so
//! no id can spell another owner's prefix):
//! - `conversations`: id → conversation row (JSON, without turns)
//! - `turns`: id ‖ version (big-endian) → turn (JSON)
//! - `owned`: owner ‖ id → () — the owner's conversations
//! - `updated`: updated_ms (big-endian) ‖ id → () — the sweeper's index
//! - `idempotency`: owner ‖ request id → record (JSON)
//! - `feedback`: sequence → feedback (JSON); `feedback_owned`: owner ‖ sequence → ()

use std::path::Path;
use std::sync::Arc;

use chorus_proto::{ConversationSummary, Erased, Turn};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Commit, Conversation, Feedback, IdempotencyRecord, Meta, Owner, Result, StoreError, decode, encode};

type Bytes = &'static [u8];
const CONVERSATIONS: TableDefinition<'_, &str, Bytes> = TableDefinition::new("conversations");
const TURNS: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("turns");
const OWNED: TableDefinition<'_, Bytes, ()> = TableDefinition::new("owned");
const UPDATED: TableDefinition<'_, Bytes, ()> = TableDefinition::new("updated");
const IDEMPOTENCY: TableDefinition<'_, Bytes, Bytes> = TableDefinition::new("idempotency");
const FEEDBACK: TableDefinition<'_, u64, Bytes> = TableDefinition::new("feedback");
const FEEDBACK_OWNED: TableDefinition<'_, Bytes, ()> = TableDefinition::new("feedback_owned");
/// Counters: `feedback_seq`, the last feedback sequence handed out (never reused, so an
/// exporter's cursor stays valid after erasures).
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters");

/// A redb database.
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

fn lp(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn owner_prefix(o: &Owner) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + o.tenant.len() + o.user.len());
    lp(&mut k, o.tenant.as_bytes());
    lp(&mut k, o.user.as_bytes());
    k
}

fn owner_key(o: &Owner, id: &str) -> Vec<u8> {
    let mut k = owner_prefix(o);
    k.extend_from_slice(id.as_bytes());
    k
}

fn turn_prefix(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + id.len());
    lp(&mut k, id.as_bytes());
    k
}

fn turn_key(id: &str, version: u64) -> Vec<u8> {
    let mut k = turn_prefix(id);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn updated_key(ms: u64, id: &str) -> Vec<u8> {
    let mut k = ms.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// Keys in `table` that start with `prefix`.
fn keys_with<T: ReadableTable<Bytes, V>, V: redb::Value + 'static>(
    table: &T,
    prefix: &[u8],
) -> std::result::Result<Vec<Vec<u8>>, redb::Error> {
    let mut out = Vec::new();
    for e in table.range(prefix..)? {
        let (k, _) = e?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(k.value().to_vec());
    }
    Ok(out)
}

/// The owner's row for `id`, or `None` when missing or someone else's.
fn meta_of<T: ReadableTable<&'static str, Bytes>>(t: &T, owner: &Owner, id: &str) -> Result<Option<Meta>> {
    let Some(v) = t.get(id).map_err(StoreError::durable)? else {
        return Ok(None);
    };
    let m: Meta = decode("conversation", v.value())?;
    Ok((&m.owner == owner).then_some(m))
}

fn turns_of<T: ReadableTable<Bytes, Bytes>>(t: &T, id: &str) -> Result<Vec<Turn>> {
    let prefix = turn_prefix(id);
    let mut out = Vec::new();
    for e in t.range(prefix.as_slice()..).map_err(StoreError::durable)? {
        let (k, v) = e.map_err(StoreError::durable)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        out.push(decode("turn", v.value())?);
    }
    Ok(out)
}

/// Removes one conversation and everything hanging off it inside `tx`; returns the
/// idempotency records removed.
fn remove_conversation(tx: &redb::WriteTransaction, m: &Meta) -> std::result::Result<u64, redb::Error> {
    tx.open_table(CONVERSATIONS)?.remove(m.id.as_str())?;
    let mut turns = tx.open_table(TURNS)?;
    for k in keys_with(&turns, &turn_prefix(&m.id))? {
        turns.remove(k.as_slice())?;
    }
    tx.open_table(OWNED)?.remove(owner_key(&m.owner, &m.id).as_slice())?;
    tx.open_table(UPDATED)?.remove(updated_key(m.updated_ms, &m.id).as_slice())?;
    let mut idem = tx.open_table(IDEMPOTENCY)?;
    let mut n = 0;
    for k in keys_with(&idem, &owner_prefix(&m.owner))? {
        let hit = match idem.get(k.as_slice())? {
            Some(v) => serde_json::from_slice::<IdempotencyRecord>(v.value()).is_ok_and(|r| r.conversation_id == m.id),
            None => false,
        };
        if hit {
            idem.remove(k.as_slice())?;
            n += 1;
        }
    }
    Ok(n)
}

impl Embedded {
    /// Opens (creating if needed) the database file and its tables.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::durable(format!("creating {}: {e}", dir.display())))?;
            }
            let db = Database::create(&path).map_err(|e| StoreError::durable(format!("{}: {e}", path.display())))?;
            let tx = db.begin_write().map_err(StoreError::durable)?;
            (|| -> std::result::Result<(), redb::Error> {
                tx.open_table(CONVERSATIONS)?;
                tx.open_table(TURNS)?;
                tx.open_table(OWNED)?;
                tx.open_table(UPDATED)?;
                tx.open_table(IDEMPOTENCY)?;
                tx.open_table(FEEDBACK)?;
                tx.open_table(FEEDBACK_OWNED)?;
                tx.open_table(COUNTERS)?;
                Ok(())
            })()
            .map_err(StoreError::durable)?;
            tx.commit().map_err(StoreError::durable)?;
            Ok(Self { db: Arc::new(db) })
        })
        .await
        .map_err(StoreError::durable)?
    }

    /// Runs blocking database work off the async threads.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Database) -> Result<T> + Send + 'static) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(StoreError::durable)?
    }

    pub async fn version(&self, owner: &Owner, id: &str) -> Result<Option<u64>> {
        let (owner, id) = (owner.clone(), id.to_string());
        self.run(move |db| {
            let tx = db.begin_read().map_err(StoreError::durable)?;
            let t = tx.open_table(CONVERSATIONS).map_err(StoreError::durable)?;
            Ok(meta_of(&t, &owner, &id)?.map(|m| m.version))
        })
        .await
    }

    pub async fn load(&self, owner: &Owner, id: &str) -> Result<Option<Conversation>> {
        let (owner, id) = (owner.clone(), id.to_string());
        self.run(move |db| {
            let tx = db.begin_read().map_err(StoreError::durable)?;
            let t = tx.open_table(CONVERSATIONS).map_err(StoreError::durable)?;
            let Some(m) = meta_of(&t, &owner, &id)? else { return Ok(None) };
            let turns = turns_of(&tx.open_table(TURNS).map_err(StoreError::durable)?, &id)?;
            Ok(Some(m.with_turns(turns)))
        })
        .await
    }

    pub async fn commit(&self, c: &Commit) -> Result<()> {
        let c = c.clone();
        self.run(move |db| {
            let tx = db.begin_write().map_err(StoreError::durable)?;
            let idem_key = owner_key(&c.owner, &c.turn.request_id);
            {
                let mut convs = tx.open_table(CONVERSATIONS).map_err(StoreError::durable)?;
                let mut idem = tx.open_table(IDEMPOTENCY).map_err(StoreError::durable)?;
                if let Some(v) = idem.get(idem_key.as_slice()).map_err(StoreError::durable)? {
                    let r: IdempotencyRecord = decode("idempotency record", v.value())?;
                    return Err(StoreError::Duplicate {
                        request_id: r.request_id,
                        conversation_id: r.conversation_id,
                        version: r.version,
                    });
                }
                let existing = convs
                    .get(c.conversation_id.as_str())
                    .map_err(StoreError::durable)?
                    .map(|v| decode::<Meta>("conversation", v.value()))
                    .transpose()?;
                let next = match (existing, c.base) {
                    (None, None) => Meta::of(&Conversation::create(&c)),
                    (Some(m), Some(base)) if m.owner == c.owner => {
                        if m.version != base {
                            return Err(StoreError::Conflict { id: m.id, base, current: m.version });
                        }
                        let mut updated = tx.open_table(UPDATED).map_err(StoreError::durable)?;
                        updated.remove(updated_key(m.updated_ms, &m.id).as_slice()).map_err(StoreError::durable)?;
                        Meta::of(&m.with_turns(Vec::new()).apply(&c))
                    }
                    // A new id that exists already (ids are random: practically never), or an
                    // append to a conversation that is gone or not the owner's.
                    (Some(m), None) => return Err(StoreError::Conflict { id: m.id, base: 0, current: m.version }),
                    (_, Some(_)) => return Err(StoreError::NotFound),
                };
                convs.insert(next.id.as_str(), encode(&next).as_slice()).map_err(StoreError::durable)?;
                let mut turns = tx.open_table(TURNS).map_err(StoreError::durable)?;
                turns
                    .insert(turn_key(&next.id, next.version).as_slice(), encode(&c.turn).as_slice())
                    .map_err(StoreError::durable)?;
                tx.open_table(OWNED)
                    .map_err(StoreError::durable)?
                    .insert(owner_key(&c.owner, &next.id).as_slice(), ())
                    .map_err(StoreError::durable)?;
                tx.open_table(UPDATED)
                    .map_err(StoreError::durable)?
                    .insert(updated_key(next.updated_ms, &next.id).as_slice(), ())
                    .map_err(StoreError::durable)?;
                let rec = IdempotencyRecord {
                    request_id: c.turn.request_id.clone(),
                    conversation_id: next.id.clone(),
                    version: next.version,
                    created_ms: c.now_ms,
                };
                idem.insert(idem_key.as_slice(), encode(&rec).as_slice()).map_err(StoreError::durable)?;
            }
            tx.commit().map_err(StoreError::durable)
        })
        .await
    }

    pub async fn idempotent(&self, owner: &Owner, request_id: &str) -> Result<Option<IdempotencyRecord>> {
        let key = owner_key(owner, request_id);
        self.run(move |db| {
            let tx = db.begin_read().map_err(StoreError::durable)?;
            let t = tx.open_table(IDEMPOTENCY).map_err(StoreError::durable)?;
            let v = t.get(key.as_slice()).map_err(StoreError::durable)?;
            v.map(|v| decode("idempotency record", v.value())).transpose()
        })
        .await
    }

    fn metas(tx: &redb::ReadTransaction, owner: &Owner) -> Result<Vec<Meta>> {
        let owned = tx.open_table(OWNED).map_err(StoreError::durable)?;
        let convs = tx.open_table(CONVERSATIONS).map_err(StoreError::durable)?;
        let prefix = owner_prefix(owner);
        let mut out = Vec::new();
        for k in keys_with(&owned, &prefix).map_err(StoreError::durable)? {
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(m) = meta_of(&convs, owner, &id)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    pub async fn list(&self, owner: &Owner, limit: usize) -> Result<Vec<ConversationSummary>> {
        let owner = owner.clone();
        self.run(move |db| {
            let tx = db.begin_read().map_err(StoreError::durable)?;
            let mut metas = Self::metas(&tx, &owner)?;
            metas.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then_with(|| a.id.cmp(&b.id)));
            metas.truncate(limit);
            Ok(metas.into_iter().map(|m| m.with_turns(Vec::new()).summary()).collect())
        })
        .await
    }

    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<bool> {
        let (owner, id) = (owner.clone(), id.to_string());
        self.run(move |db| {
            let tx = db.begin_write().map_err(StoreError::durable)?;
            let m = {
                let convs = tx.open_table(CONVERSATIONS).map_err(StoreError::durable)?;
                meta_of(&convs, &owner, &id)?
            };
            let Some(m) = m else { return Ok(false) };
            remove_conversation(&tx, &m).map_err(StoreError::durable)?;
            tx.commit().map_err(StoreError::durable)?;
            Ok(true)
        })
        .await
    }

    pub async fn erase(&self, owner: &Owner) -> Result<(Vec<String>, Erased)> {
        let owner = owner.clone();
        self.run(move |db| {
            let metas = Self::metas(&db.begin_read().map_err(StoreError::durable)?, &owner)?;
            let tx = db.begin_write().map_err(StoreError::durable)?;
            let mut erased = Erased::default();
            let prefix = owner_prefix(&owner);
            (|| -> std::result::Result<(), redb::Error> {
                for m in &metas {
                    // A conversation deleted or changed since the read above is handled by
                    // the keys removed below regardless.
                    erased.idempotency_records += remove_conversation(&tx, m)?;
                    erased.conversations += 1;
                }
                let mut idem = tx.open_table(IDEMPOTENCY)?;
                for k in keys_with(&idem, &prefix)? {
                    idem.remove(k.as_slice())?;
                    erased.idempotency_records += 1;
                }
                let mut owned = tx.open_table(OWNED)?;
                for k in keys_with(&owned, &prefix)? {
                    owned.remove(k.as_slice())?;
                }
                let mut fo = tx.open_table(FEEDBACK_OWNED)?;
                let mut fb = tx.open_table(FEEDBACK)?;
                for k in keys_with(&fo, &prefix)? {
                    let seq = u64::from_be_bytes(k[prefix.len()..].try_into().unwrap_or_default());
                    fb.remove(seq)?;
                    fo.remove(k.as_slice())?;
                    erased.feedback += 1;
                }
                Ok(())
            })()
            .map_err(StoreError::durable)?;
            tx.commit().map_err(StoreError::durable)?;
            Ok((metas.into_iter().map(|m| m.id).collect(), erased))
        })
        .await
    }

    pub async fn export(&self, owner: &Owner) -> Result<(Vec<Conversation>, Vec<Feedback>, Vec<IdempotencyRecord>)> {
        let owner = owner.clone();
        self.run(move |db| {
            let tx = db.begin_read().map_err(StoreError::durable)?;
            let turns = tx.open_table(TURNS).map_err(StoreError::durable)?;
            let mut convs = Vec::new();
            for m in Self::metas(&tx, &owner)? {
                let t = turns_of(&turns, &m.id)?;
                convs.push(m.with_turns(t));
            }
            convs.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.id.cmp(&b.id)));
            let prefix = owner_prefix(&owner);
            let fo = tx.open_table(FEEDBACK_OWNED).map_err(StoreError::durable)?;
            let fb = tx.open_table(FEEDBACK).map_err(StoreError::durable)?;
            let mut feedback = Vec::new();
            for k in keys_with(&fo, &prefix).map_err(StoreError::durable)? {
                let seq = u64::from_be_bytes(k[prefix.len()..].try_into().unwrap_or_default());
                if let Some(v) = fb.get(seq).map_err(StoreError::durable)? {
                    feedback.push(decode("feedback", v.value())?);
                }
            }
            let idem = tx.open_table(IDEMPOTENCY).map_err(StoreError::durable)?;
            let mut records = Vec::new();
            for k in keys_with(&idem, &prefix).map_err(StoreError::durable)? {
                if let Some(v) = idem.get(k.as_slice()).map_err(StoreError::durable)? {
                    records.push(decode("idempotency record", v.value())?);
                }
            }
            Ok((convs, feedback, records))
        })
        .await
    }

    pub async fn sweep(&self, cutoffs: [Option<u64>; 4], limit: usize) -> Result<Vec<String>> {
        self.run(move |db| {
            let Some(max_cut) = cutoffs.iter().flatten().max().copied() else { return Ok(Vec::new()) };
            let mut expired = Vec::new();
            {
                let tx = db.begin_read().map_err(StoreError::durable)?;
                let updated = tx.open_table(UPDATED).map_err(StoreError::durable)?;
                let convs = tx.open_table(CONVERSATIONS).map_err(StoreError::durable)?;
                let end = max_cut.to_be_bytes();
                for e in updated.range(..end.as_slice()).map_err(StoreError::durable)? {
                    let (k, _) = e.map_err(StoreError::durable)?;
                    let id = String::from_utf8_lossy(&k.value()[8..]).into_owned();
                    let Some(v) = convs.get(id.as_str()).map_err(StoreError::durable)? else { continue };
                    let m: Meta = decode("conversation", v.value())?;
                    if cutoffs[m.tier.index()].is_some_and(|cut| m.updated_ms < cut) {
                        expired.push(m);
                        if expired.len() >= limit {
                            break;
                        }
                    }
                }
            }
            if expired.is_empty() {
                return Ok(Vec::new());
            }
            let tx = db.begin_write().map_err(StoreError::durable)?;
            let mut ids = Vec::new();
            for m in expired {
                // Re-check inside the write: a turn may have landed since the read.
                let current = {
                    let convs = tx.open_table(CONVERSATIONS).map_err(StoreError::durable)?;
                    meta_of(&convs, &m.owner, &m.id)?
                };
                if current.as_ref().is_some_and(|c| c.updated_ms == m.updated_ms) {
                    remove_conversation(&tx, &m).map_err(StoreError::durable)?;
                    ids.push(m.id);
                }
            }
            tx.commit().map_err(StoreError::durable)?;
            Ok(ids)
        })
        .await
    }

    pub async fn feedback_append(&self, f: &Feedback) -> Result<()> {
        let f = f.clone();
        self.run(move |db| {
            let tx = db.begin_write().map_err(StoreError::durable)?;
            (|| -> std::result::Result<(), redb::Error> {
                let mut counters = tx.open_table(COUNTERS)?;
                let seq = counters.get("feedback_seq")?.map_or(0, |v| v.value()) + 1;
                counters.insert("feedback_seq", seq)?;
                tx.open_table(FEEDBACK)?.insert(seq, encode(&f).as_slice())?;
                let mut k = owner_prefix(&f.owner);
                k.extend_from_slice(&seq.to_be_bytes());
                tx.open_table(FEEDBACK_OWNED)?.insert(k.as_slice(), ())?;
                Ok(())
            })()
            .map_err(StoreError::durable)?;
            tx.commit().map_err(StoreError::durable)
        })
        .await
    }

    pub async fn feedback_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Feedback)>> {
        self.run(move |db| {
            let tx = db.begin_read().map_err(StoreError::durable)?;
            let fb = tx.open_table(FEEDBACK).map_err(StoreError::durable)?;
            let mut out = Vec::new();
            for e in fb.range(after.saturating_add(1)..).map_err(StoreError::durable)? {
                let (k, v) = e.map_err(StoreError::durable)?;
                out.push((k.value(), decode("feedback", v.value())?));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}
