//! Paged key/value storage: fixed-size blocks of f16 keys and values, addressed through
//! per-sequence block tables.
//!
//! This type only stores; it never decides which block belongs to whom. Allocation, sharing of
//! prefix blocks and eviction belong to the scheduler, which hands the engine a block table per
//! sequence. [`BlockAllocator`] is the minimal free list that single-user tools (the CLI, tests,
//! benchmarks) use in its place.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use crate::step::CacheShape;

/// KV storage for every layer: `[layer][block][k|v][slot][kv_head][head_dim]`, f16 bits.
#[derive(Debug)]
pub struct KvCache {
    layers: usize,
    block_size: usize,
    num_blocks: usize,
    kv_dim: usize,
    head_dim: usize,
    layer_stride: usize,
    data: Vec<u16>,
}

/// Why a cache could not be created.
#[derive(Debug, thiserror::Error)]
#[error(
    "KV cache of {blocks} blocks × {block_size} tokens × {layers} layers × {kv_dim} needs {bytes} bytes, above the limit of {limit}"
)]
pub struct KvSizeError {
    blocks: usize,
    block_size: usize,
    layers: usize,
    kv_dim: usize,
    bytes: u128,
    limit: u128,
}

/// Largest cache we allocate (64 GiB): a guard against a mistyped size, not a tuning knob.
const MAX_BYTES: u128 = 64 << 30;

impl KvCache {
    /// A zeroed cache of `num_blocks` blocks of `block_size` tokens.
    pub fn new(
        layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<Self, KvSizeError> {
        let kv_dim = n_kv_heads * head_dim;
        let elems = layers as u128 * num_blocks as u128 * 2 * block_size as u128 * kv_dim as u128;
        if elems * 2 > MAX_BYTES || block_size == 0 {
            return Err(KvSizeError {
                blocks: num_blocks,
                block_size,
                layers,
                kv_dim,
                bytes: elems * 2,
                limit: MAX_BYTES,
            });
        }
        Ok(Self {
            layers,
            block_size,
            num_blocks,
            kv_dim,
            head_dim,
            layer_stride: num_blocks * 2 * block_size * kv_dim,
            data: vec![0; elems as usize],
        })
    }

    /// The cache's geometry.
    pub fn shape(&self) -> CacheShape {
        CacheShape {
            layers: self.layers,
            kv_dim: self.kv_dim,
            head_dim: self.head_dim,
            block_size: self.block_size,
            num_blocks: self.num_blocks,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Layers stored.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Width of one key or value row (all KV heads).
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Blocks in the cache.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    #[inline]
    fn offset(&self, layer: usize, blocks: &[u32], pos: usize, v: usize) -> usize {
        let block = blocks[pos / self.block_size] as usize;
        let slot = pos % self.block_size;
        layer * self.layer_stride + ((block * 2 + v) * self.block_size + slot) * self.kv_dim
    }

    /// One layer's storage and its geometry, for kernels that walk block tables themselves.
    pub fn layer_view(&self, layer: usize) -> KvLayer<'_> {
        KvLayer {
            data: &self.data[layer * self.layer_stride..][..self.layer_stride],
            block_size: self.block_size,
            kv_dim: self.kv_dim,
            head_dim: self.head_dim,
        }
    }

    /// Stores the key and value rows (all KV heads) of position `pos`.
    pub fn write(&mut self, layer: usize, blocks: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let ko = self.offset(layer, blocks, pos, 0);
        let vo = self.offset(layer, blocks, pos, 1);
        // Slice conversion: `half` converts eight at a time with F16C where the CPU has it.
        let kd = self.kv_dim;
        self.data[ko..ko + kd].reinterpret_cast_mut::<f16>().convert_from_f32_slice(&k[..kd]);
        self.data[vo..vo + kd].reinterpret_cast_mut::<f16>().convert_from_f32_slice(&v[..kd]);
    }

    /// The key of KV head `h` at position `pos`.
    #[inline]
    pub fn key(&self, layer: usize, blocks: &[u32], pos: usize, h: usize) -> &[u16] {
        let o = self.offset(layer, blocks, pos, 0) + h * self.head_dim;
        &self.data[o..o + self.head_dim]
    }

    /// The value of KV head `h` at position `pos`.
    #[inline]
    pub fn value(&self, layer: usize, blocks: &[u32], pos: usize, h: usize) -> &[u16] {
        let o = self.offset(layer, blocks, pos, 1) + h * self.head_dim;
        &self.data[o..o + self.head_dim]
    }
}

/// One layer of a [`KvCache`]: block `b` holds `block_size` key rows then `block_size` value rows,
/// each `kv_dim` wide.
#[derive(Debug, Clone, Copy)]
pub struct KvLayer<'a> {
    /// The layer's f16 bits.
    pub data: &'a [u16],
    /// Tokens per block.
    pub block_size: usize,
    /// Width of one key or value row (all KV heads).
    pub kv_dim: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// A plain free list of block ids for single-user drivers; the scheduler has its own.
#[derive(Debug)]
pub struct BlockAllocator {
    free: Vec<u32>,
    block_size: usize,
}

impl BlockAllocator {
    /// All of `num_blocks` free.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        Self { free: (0..num_blocks as u32).rev().collect(), block_size }
    }

    /// Grows `table` to cover `tokens` positions; `false` (and no change) if blocks run out.
    pub fn ensure(&mut self, table: &mut Vec<u32>, tokens: usize) -> bool {
        let need = tokens.div_ceil(self.block_size).saturating_sub(table.len());
        if need > self.free.len() {
            return false;
        }
        for _ in 0..need {
            table.extend(self.free.pop());
        }
        true
    }

    /// Returns a table's blocks to the free list.
    pub fn release(&mut self, table: &mut Vec<u32>) {
        self.free.append(table);
    }

    /// Free blocks.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_through_the_block_table() {
        let mut kv = KvCache::new(2, 2, 16, 4, 8).unwrap();
        let blocks = [5u32, 2, 7];
        let k: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..32).map(|i| -(i as f32)).collect();
        kv.write(1, &blocks, 9, &k, &v);
        assert_eq!(f16::from_bits(kv.key(1, &blocks, 9, 1)[3]).to_f32(), 19.0);
        assert_eq!(f16::from_bits(kv.value(1, &blocks, 9, 0)[2]).to_f32(), -2.0);
        // Same slot of another layer and a neighbouring position are untouched.
        assert_eq!(kv.key(0, &blocks, 9, 1)[3], 0);
        assert_eq!(kv.key(1, &blocks, 8, 1)[3], 0);
    }

    #[test]
    fn allocator_is_all_or_nothing() {
        let mut a = BlockAllocator::new(3, 16);
        let mut t = Vec::new();
        assert!(a.ensure(&mut t, 33));
        assert_eq!(t.len(), 3);
        let mut u = Vec::new();
        assert!(!a.ensure(&mut u, 1));
        assert!(u.is_empty());
        a.release(&mut t);
        assert_eq!(a.free_blocks(), 3);
        assert!(KvCache::new(30, 3, 64, 16, usize::MAX / 4).is_err());
    }
}
