//! The parallel plan of attention: which (sequence, head) pairs, and which blocks of query
//! rows within them, run as one task.
//!
//! Attention is independent across sequences and heads, and, within one head, across query
//! rows (the softmax is taken row by row). A batch of b sequences of K heads gives b·K
//! tasks; at batch 1 that is fewer than the cores of a large machine (6 heads of CRATE-T on
//! 16 cores), so the inference forward also cuts each head's query rows into blocks
//! ([`query_splits`]). Every block computes its rows exactly as the whole head does, so the
//! result does not depend on the plan.

use ndarray::{Array2, ArrayViewMut2, Axis};

use crate::Float;

/// Elements of the attention scratch of one task (rows × n): at most 2²⁰, so that the score
/// matrix of a long sequence is formed a block of query rows at a time instead of n × n.
const ATTENTION_SCRATCH: usize = 1 << 20;

/// Fewest query rows in a block that [`query_splits`] cuts (smaller blocks run the two
/// products of a head at a poor rate).
const LEAST_QUERY_ROWS: usize = 16;

/// Multiply-adds of a batch's score products (b·n·n·heads·p) below which its heads run on
/// the calling thread, one after another.
#[cfg_attr(not(feature = "parallel"), allow(dead_code))]
const PARALLEL_WORK: usize = 1 << 18;

/// Most blocks [`query_splits`] cuts one head into.
const MOST_SPLITS: usize = 16;

/// Query rows per attention block for sequences of `n` tokens: all of them up to
/// n = 1024, then `2²⁰ / n` (at least one).
pub(super) fn attention_rows(n: usize) -> usize {
    (ATTENTION_SCRATCH / n.max(1)).clamp(1, n.max(1))
}

/// Into how many blocks of query rows to cut each of `pairs` (sequence, head) pairs of `n`
/// tokens so that `threads` threads finish together: the `s` (1 to 16, blocks of at least 16
/// rows) that minimises the rounds of equal tasks, `⌈pairs·s / threads⌉ / s` (in units of
/// one whole head), the smallest such `s` on ties. 1 when the pairs already share the
/// threads evenly: 6 heads on 16 threads give 8 (48 blocks, 3 rounds of an eighth of a head,
/// against one round of a whole head), 12 heads give 4, 192 pairs give 1.
pub(super) fn query_splits(pairs: usize, n: usize, threads: usize) -> usize {
    if threads <= 1 || pairs == 0 || pairs % threads == 0 {
        return 1;
    }
    let most = (n / LEAST_QUERY_ROWS).clamp(1, MOST_SPLITS);
    let rounds = |s: usize| pairs.saturating_mul(s).div_ceil(threads);
    // cost(s) = rounds(s) / s; compare fractions by cross-multiplication
    (1..=most).fold(1, |best, s| {
        if rounds(s) * best < rounds(best) * s {
            s
        } else {
            best
        }
    })
}

/// Runs `task(sequence, head, first row, that block)` over `rows` (b·n × heads·`p`,
/// sequences of `n` tokens) cut into blocks of at most `block_rows` rows of one sequence by
/// the `p` columns of one head; each task owns its block. With the `parallel` feature, one
/// rayon task per block, unless the batch is small (below 2¹⁸ multiply-adds of scores) or
/// the pool has one thread.
pub(super) fn for_each_head_block<T: Float>(
    p: usize,
    n: usize,
    block_rows: usize,
    rows: &mut Array2<T>,
    task: impl Fn(usize, usize, usize, ArrayViewMut2<T>) + Sync + Send,
) {
    let block_rows = block_rows.max(1);
    let run = |sq: usize, k: usize, b: usize, block: ArrayViewMut2<T>| {
        crate::linalg::clear_upper_simd_state();
        task(sq, k, b * block_rows, block)
    };
    // the multiply-adds of the score products: below PARALLEL_WORK the pool's wake-ups
    // would cost more than the heads themselves
    #[cfg(feature = "parallel")]
    if crate::rows::threads() > 1 && rows.len().saturating_mul(n) >= PARALLEL_WORK {
        use rayon::prelude::*;
        rows.axis_chunks_iter_mut(Axis(0), n)
            .into_par_iter()
            .enumerate()
            .for_each(|(sq, mut rs)| {
                rs.axis_chunks_iter_mut(Axis(1), p)
                    .into_par_iter()
                    .enumerate()
                    .for_each(|(k, mut head)| {
                        head.axis_chunks_iter_mut(Axis(0), block_rows)
                            .into_par_iter()
                            .enumerate()
                            .for_each(|(b, block)| run(sq, k, b, block))
                    })
            });
        return;
    }
    for (sq, mut rs) in rows.axis_chunks_iter_mut(Axis(0), n).enumerate() {
        for (k, mut head) in rs.axis_chunks_iter_mut(Axis(1), p).enumerate() {
            for (b, block) in head.axis_chunks_iter_mut(Axis(0), block_rows).enumerate() {
                run(sq, k, b, block);
            }
        }
    }
}

/// Runs `task(sequence, head, that pair's block of rows)` for every (sequence, head) pair of
/// `rows` (b·n × heads·`p`, sequences of `n` tokens): each task owns its n × p block. With
/// the `parallel` feature, one rayon task per pair: b·heads tasks keep every core busy at any
/// batch size (8 sequences of 6 heads on 16 cores, say).
pub(super) fn for_each_head_rows<T: Float>(
    p: usize,
    n: usize,
    rows: &mut Array2<T>,
    task: impl Fn(usize, usize, ArrayViewMut2<T>) + Sync + Send,
) {
    for_each_head_block(p, n, n, rows, |sq, k, _, block| task(sq, k, block));
}

/// [`for_each_head_rows`] with each pair's n × n block of `maps` as well ((b·heads·n) × n,
/// the block of sequence s and head k at rows `(s·heads + k)·n`): the training forward writes
/// each head's attention map there for the backward.
pub(super) fn for_each_head_rows_and_map<T: Float>(
    p: usize,
    n: usize,
    rows: &mut Array2<T>,
    maps: &mut Array2<T>,
    task: impl Fn(usize, usize, ArrayViewMut2<T>, ArrayViewMut2<T>) + Sync + Send,
) {
    let heads = rows.ncols() / p.max(1);
    debug_assert_eq!(maps.dim(), (rows.nrows() / n.max(1) * heads * n, n));
    let run = |sq: usize, k: usize, head: ArrayViewMut2<T>, map: ArrayViewMut2<T>| {
        crate::linalg::clear_upper_simd_state();
        task(sq, k, head, map)
    };
    #[cfg(feature = "parallel")]
    if crate::rows::threads() > 1 && rows.len().saturating_mul(n) >= PARALLEL_WORK {
        use rayon::prelude::*;
        rows.axis_chunks_iter_mut(Axis(0), n)
            .into_par_iter()
            .zip(maps.axis_chunks_iter_mut(Axis(0), heads * n))
            .enumerate()
            .for_each(|(sq, (mut rs, mut ms))| {
                rs.axis_chunks_iter_mut(Axis(1), p)
                    .into_par_iter()
                    .zip(ms.axis_chunks_iter_mut(Axis(0), n))
                    .enumerate()
                    .for_each(|(k, (head, map))| run(sq, k, head, map))
            });
        return;
    }
    let sequences = rows
        .axis_chunks_iter_mut(Axis(0), n)
        .zip(maps.axis_chunks_iter_mut(Axis(0), heads * n));
    for (sq, (mut rs, mut ms)) in sequences.enumerate() {
        let pairs = rs
            .axis_chunks_iter_mut(Axis(1), p)
            .zip(ms.axis_chunks_iter_mut(Axis(0), n));
        for (k, (head, map)) in pairs.enumerate() {
            run(sq, k, head, map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_balance_the_rounds() {
        // CRATE-T and CRATE-S at batch 1 on 16 threads
        assert_eq!(query_splits(6, 197, 16), 8);
        assert_eq!(query_splits(12, 197, 16), 4);
        // already even, or one thread: no split
        assert_eq!(query_splits(192, 197, 16), 1);
        assert_eq!(query_splits(6, 197, 2), 1);
        assert_eq!(query_splits(6, 197, 1), 1);
        // one head on 16 threads: 12 blocks of at least 16 of the 197 rows
        assert_eq!(query_splits(1, 197, 16), 12);
        // too short to split
        assert_eq!(query_splits(3, 20, 16), 1);
        assert_eq!(query_splits(0, 197, 16), 1);
    }

    #[test]
    fn head_maps_pair_with_their_rows() {
        let (n, p, heads, b) = (5, 2, 3, 2);
        let mut a = Array2::<f64>::zeros((b * n, heads * p));
        let mut maps = Array2::<f64>::zeros((b * heads * n, n));
        for_each_head_rows_and_map(p, n, &mut a, &mut maps, |sq, k, mut rows, mut map| {
            rows.fill((10 * sq + k) as f64);
            map.fill((10 * sq + k) as f64);
        });
        for ((i, j), v) in a.indexed_iter() {
            assert_eq!(*v, (10 * (i / n) + j / p) as f64);
        }
        for ((i, _), v) in maps.indexed_iter() {
            let pair = i / n;
            assert_eq!(*v, (10 * (pair / heads) + pair % heads) as f64);
        }
    }

    #[test]
    fn blocks_cover_every_row_once() {
        let (n, p, heads, b) = (7, 2, 3, 2);
        let mut a = Array2::<f64>::zeros((b * n, heads * p));
        for block_rows in [1, 3, 7, 9] {
            a.fill(0.0);
            for_each_head_block(p, n, block_rows, &mut a, |sq, k, r0, mut block| {
                for ((i, j), v) in block.indexed_iter_mut() {
                    *v += (100 * sq + 10 * k + r0 + i) as f64 + j as f64 / 10.0;
                }
            });
            for ((i, j), v) in a.indexed_iter() {
                let want = (100 * (i / n) + 10 * (j / p) + i % n) as f64 + (j % p) as f64 / 10.0;
                assert_eq!(*v, want, "block_rows {block_rows}, ({i}, {j})");
            }
        }
    }
}
