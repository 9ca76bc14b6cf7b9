//! The KV block pool: reference-counted blocks, a prefix cache of full blocks, and
//! least-recently-used eviction of cached blocks nobody holds.
//!
//! A block is in exactly one of three states: *held* (reference count > 0, by the block tables
//! that list it), *cached* (count 0 but its content is named by a hash and may be reused until
//! evicted), or *free*. A full block's identity is the SHA-256 of (parent identity, its token
//! ids), where the root parent is the hash of (model id, cache salt): the same tokens under
//! another model or another salt — another tenant, by default — never match, so one tenant
//! cannot learn by timing what another has cached.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

/// The identity of a full block's content (and everything before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash([u8; 32]);

impl BlockHash {
    /// The root of a sequence's hash chain: what its first block's hash extends.
    pub fn root(model_id: &str, salt: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"chorus-kv-v1");
        h.update((model_id.len() as u64).to_le_bytes());
        h.update(model_id.as_bytes());
        h.update((salt.len() as u64).to_le_bytes());
        h.update(salt);
        Self(h.finalize().into())
    }

    /// The identity of a block holding `tokens` after the content named by `self`.
    pub fn child(&self, tokens: &[u32]) -> Self {
        let mut h = Sha256::new();
        h.update(self.0);
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        Self(h.finalize().into())
    }
}

/// The blocks one sequence holds, in position order. Only the pool changes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockTable {
    ids: Vec<u32>,
}

impl BlockTable {
    /// Block ids, for the engine's step.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Holds no block.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Reference-counted KV blocks with a prefix cache.
#[derive(Debug)]
pub struct BlockPool {
    block_size: usize,
    refs: Vec<u32>,
    hash_of: Vec<Option<BlockHash>>,
    /// Unheld, uncached.
    free: Vec<u32>,
    /// Unheld, cached: eviction order (oldest use first) and each block's key in it.
    lru: BTreeMap<u64, u32>,
    lru_key: Vec<u64>,
    tick: u64,
    cached: HashMap<BlockHash, u32>,
}

impl BlockPool {
    /// `num_blocks` free blocks of `block_size` tokens.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        Self {
            block_size,
            refs: vec![0; num_blocks],
            hash_of: vec![None; num_blocks],
            free: (0..num_blocks as u32).rev().collect(),
            lru: BTreeMap::new(),
            lru_key: vec![0; num_blocks],
            tick: 0,
            cached: HashMap::new(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks a new allocation can take: free plus cached-but-unheld.
    pub fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// Blocks held by at least one table.
    pub fn held(&self) -> usize {
        self.num_blocks() - self.available()
    }

    /// Blocks whose content is in the prefix cache (held or not).
    pub fn cached(&self) -> usize {
        self.cached.len()
    }

    /// How many leading blocks of the chain `hashes` are cached, and how many of those are
    /// currently unheld (acquiring them takes them out of [`available`](Self::available)).
    pub fn probe(&self, hashes: &[BlockHash]) -> (usize, usize) {
        let mut unheld = 0;
        for (i, h) in hashes.iter().enumerate() {
            match self.cached.get(h) {
                Some(&b) => unheld += usize::from(self.refs[b as usize] == 0),
                None => return (i, unheld),
            }
        }
        (hashes.len(), unheld)
    }

    /// Appends the cached blocks of the leading `hashes` to `table` (as counted by
    /// [`probe`](Self::probe)); returns how many were appended.
    pub fn acquire_prefix(&mut self, table: &mut BlockTable, hashes: &[BlockHash]) -> usize {
        let mut n = 0;
        for h in hashes {
            let Some(&b) = self.cached.get(h) else { break };
            self.hold(b);
            table.ids.push(b);
            n += 1;
        }
        n
    }

    fn hold(&mut self, b: u32) {
        let r = &mut self.refs[b as usize];
        if *r == 0 && self.hash_of[b as usize].is_some() {
            self.lru.remove(&self.lru_key[b as usize]);
        }
        *r += 1;
    }

    /// Grows `table` to cover `tokens` positions, evicting the least recently used cached
    /// blocks when no free one is left. All or nothing: `false` and no change if too few.
    pub fn ensure(&mut self, table: &mut BlockTable, tokens: usize) -> bool {
        let need = tokens.div_ceil(self.block_size).saturating_sub(table.ids.len());
        if need > self.available() {
            return false;
        }
        for _ in 0..need {
            let b = match self.free.pop() {
                Some(b) => b,
                None => {
                    let (_, b) = self.lru.pop_first().expect("available() counted it");
                    let h = self.hash_of[b as usize].take().expect("an LRU block is cached");
                    self.cached.remove(&h);
                    b
                }
            };
            self.refs[b as usize] = 1;
            table.ids.push(b);
        }
        true
    }

    /// Blocks needed to grow a table of `held` blocks to cover `tokens` positions.
    pub fn blocks_for(&self, held: usize, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size).saturating_sub(held)
    }

    /// Names the content of `table`'s block `index` by `hash`, so later sequences can reuse it.
    /// A block already cached under another hash, or a hash already naming another block, is
    /// left as it is (the duplicate is simply not shared).
    pub fn register(&mut self, table: &BlockTable, index: usize, hash: BlockHash) {
        let b = table.ids[index];
        if self.hash_of[b as usize].is_some() || self.cached.contains_key(&hash) {
            return;
        }
        self.hash_of[b as usize] = Some(hash);
        self.cached.insert(hash, b);
    }

    /// Gives back every block of `table`. Blocks nobody else holds become free, or, if cached,
    /// the most recently used eviction candidates. Later blocks are released first so that a
    /// chain's tail is evicted before its head.
    pub fn release(&mut self, table: &mut BlockTable) {
        for b in table.ids.drain(..).rev() {
            let r = &mut self.refs[b as usize];
            debug_assert!(*r > 0, "block {b} released more often than held");
            *r = r.saturating_sub(1);
            if *r == 0 {
                if self.hash_of[b as usize].is_some() {
                    self.tick += 1;
                    self.lru_key[b as usize] = self.tick;
                    self.lru.insert(self.tick, b);
                } else {
                    self.free.push(b);
                }
            }
        }
    }

    /// Checks that every block is in exactly one state and that reference counts equal the
    /// number of `tables` listing each block. Returns what is wrong, if anything.
    pub fn check(&self, tables: &[&BlockTable]) -> Result<(), String> {
        let n = self.num_blocks();
        let mut counted = vec![0u32; n];
        for t in tables {
            for &b in &t.ids {
                let c = counted.get_mut(b as usize).ok_or_else(|| format!("table lists block {b} of {n}"))?;
                *c += 1;
            }
        }
        let mut state = vec![0u8; n];
        for &b in &self.free {
            state[b as usize] += 1;
            if self.hash_of[b as usize].is_some() {
                return Err(format!("free block {b} is cached"));
            }
        }
        for (&k, &b) in &self.lru {
            state[b as usize] += 1;
            if self.lru_key[b as usize] != k || self.hash_of[b as usize].is_none() {
                return Err(format!("LRU entry {k} for block {b} is stale"));
            }
        }
        for b in 0..n {
            if self.refs[b] != counted[b] {
                return Err(format!("block {b}: reference count {} but {} tables hold it", self.refs[b], counted[b]));
            }
            let expect = u8::from(self.refs[b] == 0);
            if state[b] != expect {
                return Err(format!(
                    "block {b}: held {} times yet on the free/LRU lists {} times (leak or double free)",
                    self.refs[b], state[b]
                ));
            }
            if let Some(h) = self.hash_of[b]
                && self.cached.get(&h) != Some(&(b as u32))
            {
                return Err(format!("block {b} names a hash the cache maps elsewhere"));
            }
        }
        for (h, &b) in &self.cached {
            if self.hash_of[b as usize] != Some(*h) {
                return Err(format!("cache entry for block {b} does not match the block"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(model: &str, salt: &[u8], tokens: &[u32], bs: usize) -> Vec<BlockHash> {
        let mut h = BlockHash::root(model, salt);
        tokens
            .chunks_exact(bs)
            .map(|c| {
                h = h.child(c);
                h
            })
            .collect()
    }

    #[test]
    fn hashes_depend_on_model_salt_parent_and_tokens() {
        let t: Vec<u32> = (0..8).collect();
        let a = chain("m", b"tenant-a", &t, 4);
        assert_eq!(a, chain("m", b"tenant-a", &t, 4));
        assert_ne!(a[0], chain("m", b"tenant-b", &t, 4)[0]);
        assert_ne!(a[0], chain("m2", b"tenant-a", &t, 4)[0]);
        let mut t2 = t.clone();
        t2[0] = 99;
        let b = chain("m", b"tenant-a", &t2, 4);
        assert_ne!(a[1], b[1], "a later block's identity covers its whole prefix");
        // Length prefixes keep (model, salt) pairs from running together.
        assert_ne!(BlockHash::root("ab", b"c"), BlockHash::root("a", b"bc"));
    }

    #[test]
    fn cached_blocks_are_reused_then_evicted_least_recent_first() {
        let mut p = BlockPool::new(4, 2);
        let hs = chain("m", b"", &[1, 2, 3, 4], 2);
        let mut t = BlockTable::default();
        assert!(p.ensure(&mut t, 4));
        p.register(&t, 0, hs[0]);
        p.register(&t, 1, hs[1]);
        p.release(&mut t);
        p.check(&[]).unwrap();
        assert_eq!((p.available(), p.cached()), (4, 2));
        assert_eq!(p.probe(&hs), (2, 2));

        let mut u = BlockTable::default();
        assert_eq!(p.acquire_prefix(&mut u, &hs[..1]), 1);
        assert_eq!(p.available(), 3);
        p.check(&[&u]).unwrap();
        // Three more blocks: two free ones, then the one unheld cached block is evicted.
        assert!(p.ensure(&mut u, 8));
        assert_eq!(p.cached(), 1);
        assert_eq!(p.probe(&hs), (1, 0));
        assert!(!p.ensure(&mut u, 10), "all or nothing");
        assert_eq!(u.len(), 4);
        p.check(&[&u]).unwrap();
        p.release(&mut u);
        p.check(&[]).unwrap();
        assert_eq!(p.available(), 4);
    }

    #[test]
    fn check_finds_leaks_and_miscounts() {
        let mut p = BlockPool::new(3, 2);
        let mut t = BlockTable::default();
        assert!(p.ensure(&mut t, 3));
        assert!(p.check(&[]).is_err(), "held blocks with no table are a leak");
        assert!(p.check(&[&t, &t]).is_err());
        p.check(&[&t]).unwrap();
    }
}
