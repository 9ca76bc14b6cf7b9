//! Views of one output buffer that several pool threads write at once, each through its own
//! rows or tiles. They hold a raw pointer instead of a `&mut`, so no thread ever holds a
//! reference to what another writes; every accessor checks its bounds.
//!
//! A leaf so that both the scalar reference (`quant`) and the SIMD kernels (`kernels`) can write
//! through them without importing each other.

/// A raw pointer that threads may share because they write disjoint elements through it.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);

impl<T> SharedMut<T> {
    /// The pointer; a method so that closures capture the whole (Sync) wrapper, not the field.
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}
// SAFETY: users guarantee disjoint writes (each thread owns distinct rows/groups), and only
// `Send` data crosses threads.
#[allow(unsafe_code)]
unsafe impl<T: Send> Sync for SharedMut<T> {}
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for SharedMut<T> {}

/// A row-major buffer whose rows (or parts of rows) threads fill in parallel. It never hands
/// out a reference wider than the part a thread owns.
pub(crate) struct RowsMut<'a, T> {
    ptr: SharedMut<T>,
    row: usize,
    rows: usize,
    _buf: std::marker::PhantomData<&'a mut [T]>,
}

impl<'a, T: Send> RowsMut<'a, T> {
    /// Views `buf` as rows of `row` elements.
    pub(crate) fn new(buf: &'a mut [T], row: usize) -> Self {
        Self { ptr: SharedMut(buf.as_mut_ptr()), row, rows: buf.len() / row.max(1), _buf: std::marker::PhantomData }
    }

    /// Row `r`.
    ///
    /// # Safety
    /// No two threads may hold overlapping parts of one row at once.
    #[allow(unsafe_code)]
    #[allow(clippy::mut_from_ref)] // the point of the type: disjoint rows from shared threads
    pub(crate) unsafe fn get(&self, r: usize) -> &mut [T] {
        // SAFETY: forwarded contract.
        unsafe { self.get_range(r, 0, self.row) }
    }

    /// Elements `start..start + len` of row `r`.
    ///
    /// # Safety
    /// As [`Self::get`].
    #[allow(unsafe_code)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get_range(&self, r: usize, start: usize, len: usize) -> &mut [T] {
        assert!(
            r < self.rows && start.checked_add(len).is_some_and(|e| e <= self.row),
            "row {r}[{start}..+{len}] of {}x{}",
            self.rows,
            self.row
        );
        // SAFETY: in bounds (above); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.get().add(r * self.row + start), len) }
    }
}

/// An output matrix written element- or tile-wise by several threads through a raw pointer,
/// so no thread ever holds a `&mut` to parts another thread writes.
pub(crate) struct OutRows {
    ptr: SharedMut<f32>,
    len: usize,
    /// Row stride.
    pub(crate) ld: usize,
}

impl OutRows {
    /// Views `y` with row stride `ld`.
    pub(crate) fn new(y: &mut [f32], ld: usize) -> Self {
        Self { ptr: SharedMut(y.as_mut_ptr()), len: y.len(), ld }
    }

    /// A pointer to `n` consecutive elements starting at row `t`, column `col`.
    pub(crate) fn span(&self, t: usize, col: usize, n: usize) -> *mut f32 {
        let start = t.checked_mul(self.ld).and_then(|o| o.checked_add(col));
        assert!(
            start.and_then(|s| s.checked_add(n)).is_some_and(|e| e <= self.len),
            "output [{t}][{col}..+{n}] out of bounds"
        );
        // SAFETY: in bounds (above).
        #[allow(unsafe_code)]
        unsafe {
            self.ptr.get().add(t * self.ld + col)
        }
    }

    /// Writes one element.
    ///
    /// # Safety
    /// No other thread may write the same element concurrently.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn set(&self, t: usize, col: usize, v: f32) {
        // SAFETY: `span` checked the bounds; exclusivity is the caller's contract.
        unsafe { *self.span(t, col, 1) = v }
    }
}
