//! Data-parallel training: one process per GPU, each embedding its share of every
//! batch, with a softmax over the whole batch.
//!
//! Every rank draws the same global batch (same data, same seed: no coordinator) and
//! embeds its contiguous share of the queries and of the documents. The embeddings are
//! all-gathered, so every rank holds the batch's `(B, dim)` query and document matrices
//! and computes the same full-batch loss and its gradient `G` with respect to every
//! embedding (a `B × B` softmax: cheap beside the encoder). Each rank back-propagates
//! `⟨E_own, G_own⟩` through its own share's graph, and the parameter gradients are
//! summed over ranks by one all-reduce. The sum is the full batch's gradient exactly,
//! the same as one process computing the whole batch: the GradCache identity
//! ([`crate::step`]) with the mini-batches on different GPUs.
//!
//! Why not an all-gather with a backward (what `torch.distributed.nn.all_gather`
//! gives sentence-transformers): candle has no collective op in its graph, and
//! computing the loss on every rank removes the need for one. The only collectives are
//! an all-gather of embeddings (48 KB a rank at batch 32, dim 384) and an all-reduce of
//! the gradients, flattened into one buffer.
//!
//! The transport is a [`Collective`]: [`Single`] (one process), [`ThreadGroup`] (ranks
//! as threads of one process, which checks the maths on the CPU) and, behind the
//! `nccl` feature, [`nccl::Nccl`] over NVIDIA's NCCL. [`World::from_env`] reads the
//! rank from `torchrun`'s or Slurm's variables and [`exchange_id`] hands rank 0's
//! NCCL id to the others over TCP at `MASTER_ADDR`, port `MASTER_PORT + 1` (torchrun's
//! own store has `MASTER_PORT`; `SIEVE_NCCL_PORT` chooses another).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use candle_core::{Result, Tensor};

/// One process's place in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The GPU this process uses on its node (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    /// Where rank 0 hands out the NCCL id: `MASTER_ADDR` and `SIEVE_NCCL_PORT`, by
    /// default `MASTER_PORT + 1` (torchrun's own store listens on `MASTER_PORT`).
    pub master: Option<(String, u16)>,
}

impl World {
    /// The world from the launcher's environment: `RANK`/`WORLD_SIZE`/`LOCAL_RANK`
    /// (torchrun, `accelerate`, Kubernetes' PyTorchJob), else Slurm's
    /// `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` (one task per GPU under `srun`).
    /// `None` when neither is set.
    pub fn from_env() -> std::result::Result<Option<Self>, String> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any lookup (tests pass a map).
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Option<Self>, String> {
        let num = |k: &str| -> std::result::Result<Option<usize>, String> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| format!("{k}={v:?} is not a whole number")),
            }
        };
        let (rank, size, local) = if let (Some(r), Some(n)) = (num("RANK")?, num("WORLD_SIZE")?) {
            (r, n, num("LOCAL_RANK")?.unwrap_or(r))
        } else if let (Some(r), Some(n)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
            (r, n, num("SLURM_LOCALID")?.unwrap_or(r))
        } else {
            return Ok(None);
        };
        if size == 0 || rank >= size {
            return Err(format!("rank {rank} is outside a world of {size}"));
        }
        let master = match (get("MASTER_ADDR"), num("MASTER_PORT")?) {
            (Some(a), Some(p)) => {
                let port = match num("SIEVE_NCCL_PORT")? {
                    Some(q) => u16::try_from(q)
                        .map_err(|_| format!("SIEVE_NCCL_PORT={q} is not a port"))?,
                    None => u16::try_from(p + 1)
                        .map_err(|_| format!("MASTER_PORT={p} leaves no port after it"))?,
                };
                Some((a, port))
            }
            (None, None) => None,
            _ => return Err("MASTER_ADDR and MASTER_PORT go together".into()),
        };
        Ok(Some(Self {
            rank,
            size,
            local_rank: local,
            master,
        }))
    }
}

/// How the ranks exchange tensors. Every rank calls the same methods in the same order
/// with tensors of the same shape and dtype.
pub trait Collective: Send + Sync + std::fmt::Debug {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Every rank's `t`, concatenated along dimension 0 in rank order.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor>;
    /// The element-wise sum of every rank's `t`.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
}

/// One process: the collectives are the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
}

struct Shared {
    slots: Mutex<Vec<Option<Tensor>>>,
    barrier: Barrier,
}

/// Ranks as threads of one process, exchanging tensors through shared memory. It runs
/// the data-parallel step on the CPU, so that its gradients can be checked against one
/// process computing the whole batch (NCCL needs GPUs).
#[derive(Clone)]
pub struct ThreadGroup {
    shared: Arc<Shared>,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for ThreadGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadGroup(rank {} of {})", self.rank, self.size)
    }
}

impl ThreadGroup {
    /// `size` handles, one per rank, to be moved into `size` threads.
    pub fn new(size: usize) -> Vec<Self> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![None; size]),
            barrier: Barrier::new(size),
        });
        (0..size)
            .map(|rank| Self {
                shared: shared.clone(),
                rank,
                size,
            })
            .collect()
    }

    /// Every rank's tensor, in rank order: each writes its slot, all wait, all read,
    /// all wait again (so that no slot is overwritten before everyone has read it).
    fn exchange(&self, t: &Tensor) -> Vec<Tensor> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = Some(t.clone());
        self.shared.barrier.wait();
        let all: Vec<Tensor> = self
            .shared
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .cloned()
            .collect();
        self.shared.barrier.wait();
        all
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Tensor::cat(&self.exchange(t), 0)
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let all = self.exchange(t);
        let mut sum = all[0].clone();
        for x in &all[1..] {
            sum = (sum + x)?;
        }
        Ok(sum)
    }
}

/// Rank `rank`'s contiguous share of `len` items over `size` ranks (sizes differ by at
/// most one).
pub fn share(len: usize, rank: usize, size: usize) -> Range<usize> {
    (rank * len / size)..((rank + 1) * len / size)
}

/// Every rank's `rows` (its [`share`] of `len` rows), in order: padded with zero rows
/// to the largest share so that every rank sends the same shape, gathered, unpadded.
pub fn gather_rows(world: &dyn Collective, rows: &Tensor, len: usize) -> Result<Tensor> {
    let n = world.world_size();
    if n == 1 {
        return Ok(rows.clone());
    }
    let widest = len.div_ceil(n);
    let (have, dim) = rows.dims2()?;
    let padded = if have < widest {
        let pad = Tensor::zeros((widest - have, dim), rows.dtype(), rows.device())?;
        Tensor::cat(&[rows, &pad], 0)?
    } else {
        rows.clone()
    };
    let all = world.all_gather(&padded.contiguous()?)?;
    let parts = (0..n)
        .map(|r| all.narrow(0, r * widest, share(len, r, n).len()))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// How long the other ranks wait for rank 0's listener, and for its answer.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

/// What rank 0 sends before the id, so that a rank that reached another service on the
/// port fails instead of reading its bytes as an id.
const MAGIC: &[u8; 14] = b"SIEVE-NCCL-ID\n";

/// Rank 0's `id` (made by `make_id`, NCCL's unique id) handed to every rank over TCP at
/// [`World::master`]: rank 0 listens and answers `size - 1` connections, the others
/// connect (retrying while rank 0 starts) and read it.
pub fn exchange_id(
    world: &World,
    make_id: impl FnOnce() -> std::result::Result<Vec<u8>, String>,
) -> std::result::Result<Vec<u8>, String> {
    let Some((addr, port)) = &world.master else {
        return Err(
            "a data-parallel run needs MASTER_ADDR and MASTER_PORT (rank 0's host and a free port)"
                .into(),
        );
    };
    if world.rank == 0 {
        let id = make_id()?;
        let listener = TcpListener::bind(("0.0.0.0", *port))
            .map_err(|e| format!("rank 0 cannot listen on port {port}: {e}"))?;
        for _ in 1..world.size {
            let (mut s, _) = listener
                .accept()
                .map_err(|e| format!("rank 0 on port {port}: {e}"))?;
            s.write_all(MAGIC)
                .and_then(|_| s.write_all(&(id.len() as u32).to_le_bytes()))
                .and_then(|_| s.write_all(&id))
                .map_err(|e| format!("rank 0 sending the id: {e}"))?;
        }
        return Ok(id);
    }
    let start = Instant::now();
    loop {
        match TcpStream::connect((addr.as_str(), *port)) {
            Ok(mut s) => {
                let read_err =
                    |e: std::io::Error| format!("reading the id from {addr}:{port}: {e}");
                s.set_read_timeout(Some(RENDEZVOUS_TIMEOUT))
                    .map_err(read_err)?;
                let mut magic = [0u8; MAGIC.len()];
                s.read_exact(&mut magic).map_err(read_err)?;
                if &magic != MAGIC {
                    return Err(format!(
                        "{addr}:{port} is not a sieve rank 0 (another service on the port? set \
                         SIEVE_NCCL_PORT to a free one)"
                    ));
                }
                let mut len = [0u8; 4];
                s.read_exact(&mut len).map_err(read_err)?;
                let len = u32::from_le_bytes(len) as usize;
                if len > 4096 {
                    return Err(format!("{addr}:{port} sent an id of {len} bytes"));
                }
                let mut id = vec![0u8; len];
                s.read_exact(&mut id)
                    .map_err(|e| format!("reading the id from {addr}:{port}: {e}"))?;
                return Ok(id);
            }
            Err(e) if start.elapsed() < RENDEZVOUS_TIMEOUT => {
                tracing::debug!("rank {} waiting for {addr}:{port}: {e}", world.rank);
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(format!(
                    "rank {} found no rank 0 at {addr}:{port} within {}s: {e}",
                    world.rank,
                    RENDEZVOUS_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

/// NCCL collectives on CUDA tensors (the `nccl` feature).
#[cfg(feature = "nccl")]
pub mod nccl {
    use std::sync::Mutex;

    use candle_core::{
        backend::BackendStorage, CpuStorage, CudaStorage, DType, Layout, Result, Shape, Tensor,
    };
    use cudarc::nccl::safe::{Comm, Id, ReduceOp};

    use super::{Collective, World};

    /// One rank's NCCL communicator. It is created at the first collective, on the
    /// stream of the tensor it gets: the model's own, so the collective is ordered after
    /// the kernels that produced its input without an extra synchronisation (candle
    /// gives every `Device::new_cuda` a stream of its own).
    pub struct Nccl {
        id: [std::ffi::c_char; 128],
        rank: usize,
        size: usize,
        comm: Mutex<Option<Comm>>,
    }

    // SAFETY: NCCL allows a communicator to be used from any host thread, one call at a
    // time; the mutex serialises the calls.
    unsafe impl Send for Nccl {}
    unsafe impl Sync for Nccl {}

    impl std::fmt::Debug for Nccl {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Nccl(rank {} of {})", self.rank, self.size)
        }
    }

    /// A new NCCL unique id (rank 0 makes it; [`super::exchange_id`] hands it out).
    pub fn new_id() -> std::result::Result<Vec<u8>, String> {
        let id = Id::new().map_err(|e| format!("ncclGetUniqueId: {e:?}"))?;
        Ok(id.internal().iter().map(|&c| c as u8).collect())
    }

    impl Nccl {
        /// Rank `world.rank` of the communicator `id` (128 bytes from [`new_id`]).
        pub fn new(world: &World, id: &[u8]) -> Result<Self> {
            let mut internal = [0 as std::ffi::c_char; 128];
            if id.len() != internal.len() {
                candle_core::bail!("an NCCL id has 128 bytes, got {}", id.len());
            }
            for (d, s) in internal.iter_mut().zip(id) {
                *d = *s as std::ffi::c_char;
            }
            Ok(Self {
                id: internal,
                rank: world.rank,
                size: world.size,
                comm: Mutex::new(None),
            })
        }
    }

    struct Op<'a> {
        nccl: &'a Nccl,
        gather: bool,
    }

    impl candle_core::CustomOp1 for Op<'_> {
        fn name(&self) -> &'static str {
            if self.gather {
                "nccl-all-gather"
            } else {
                "nccl-all-reduce"
            }
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("NCCL collectives run on CUDA tensors: train with --device cuda")
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            // A contiguous view may start inside its storage (a narrowed share of the
            // batch's embeddings): send exactly its elements.
            let Some((start, end)) = l.contiguous_offsets() else {
                candle_core::bail!("{}: the tensor must be contiguous", self.name());
            };
            let dev = s.device().clone();
            let err = |e| candle_core::Error::Msg(format!("{}: {e:?}", self.name()));
            let mut slot = self.nccl.comm.lock().unwrap_or_else(|e| e.into_inner());
            let comm = match slot.take() {
                Some(c) => c,
                None => Comm::from_rank(
                    dev.cuda_stream(),
                    self.nccl.rank,
                    self.nccl.size,
                    Id::uninit(self.nccl.id),
                )
                .map_err(|e| candle_core::Error::Msg(format!("ncclCommInitRank: {e:?}")))?,
            };
            let comm = slot.insert(comm);
            let mut dims = l.shape().dims().to_vec();
            if self.gather {
                dims[0] *= self.nccl.size;
            }
            let out_len = dims.iter().product::<usize>();
            macro_rules! run {
                ($t:ty) => {{
                    let src = s.as_cuda_slice::<$t>()?.slice(start..end);
                    let mut dst = dev.alloc_zeros::<$t>(out_len)?;
                    if self.gather {
                        comm.all_gather(&src, &mut dst).map_err(err)?;
                    } else {
                        comm.all_reduce(&src, &mut dst, &ReduceOp::Sum)
                            .map_err(err)?;
                    }
                    CudaStorage::wrap_cuda_slice(dst, dev.clone())
                }};
            }
            let out = match s.dtype() {
                DType::F32 => run!(f32),
                DType::F64 => run!(f64),
                DType::BF16 => run!(half::bf16),
                other => candle_core::bail!("{}: no NCCL path for {other:?}", self.name()),
            };
            Ok((out, Shape::from(dims)))
        }
    }

    impl Collective for Nccl {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.size
        }
        fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
            t.contiguous()?.apply_op1_no_bwd(&Op {
                nccl: self,
                gather: true,
            })
        }
        fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
            t.contiguous()?.apply_op1_no_bwd(&Op {
                nccl: self,
                gather: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world(vars: &[(&str, &str)]) -> std::result::Result<Option<World>, String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        World::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn the_world_comes_from_torchrun_or_slurm() {
        assert_eq!(world(&[]).unwrap(), None);
        let w = world(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "9"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            w,
            World {
                rank: 3,
                size: 4,
                local_rank: 1,
                master: Some(("node7".into(), 29501))
            }
        );
        let own_port = world(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "n"),
            ("MASTER_PORT", "29500"),
            ("SIEVE_NCCL_PORT", "31000"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(own_port.master, Some(("n".into(), 31000)));
        let s = world(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((s.rank, s.size, s.local_rank, s.master), (5, 8, 1, None));
        for bad in [
            vec![("RANK", "4"), ("WORLD_SIZE", "4")],
            vec![("RANK", "x"), ("WORLD_SIZE", "4")],
            vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")],
            vec![
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "70000"),
            ],
        ] {
            assert!(world(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shares_cover_every_row_once() {
        for len in [1usize, 5, 32, 33] {
            for size in 1..=4 {
                let mut next = 0;
                for r in 0..size {
                    let s = share(len, r, size);
                    assert_eq!(s.start, next);
                    assert!(s.len() == len / size || s.len() == len.div_ceil(size));
                    next = s.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn thread_ranks_gather_uneven_shares_and_sum() {
        let len = 7;
        let groups = ThreadGroup::new(3);
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let s = share(len, g.rank(), 3);
                    let rows: Vec<f32> = s.clone().flat_map(|i| [i as f32, -(i as f32)]).collect();
                    let t =
                        Tensor::from_vec(rows, (s.len(), 2), &candle_core::Device::Cpu).unwrap();
                    let all = gather_rows(&g, &t, len).unwrap();
                    let sum = g
                        .all_reduce_sum(
                            &Tensor::new(&[g.rank() as f32 + 1.0], &candle_core::Device::Cpu)
                                .unwrap(),
                        )
                        .unwrap();
                    (all.to_vec2::<f32>().unwrap(), sum.to_vec1::<f32>().unwrap())
                })
            })
            .collect();
        for h in handles {
            let (all, sum) = h.join().unwrap();
            let want: Vec<Vec<f32>> = (0..len).map(|i| vec![i as f32, -(i as f32)]).collect();
            assert_eq!(all, want);
            assert_eq!(sum, vec![6.0]);
        }
    }

    #[test]
    fn rank_zero_hands_its_id_to_every_rank_over_tcp() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let handles: Vec<_> = (0..3)
            .rev() // the others start first and wait for rank 0
            .map(|rank| {
                std::thread::spawn(move || {
                    let w = World {
                        rank,
                        size: 3,
                        local_rank: rank,
                        master: Some(("127.0.0.1".into(), port)),
                    };
                    exchange_id(&w, || Ok((0..128).map(|i| i as u8 ^ 0x5a).collect())).unwrap()
                })
            })
            .collect();
        let want: Vec<u8> = (0..128).map(|i| i as u8 ^ 0x5a).collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want);
        }
        // Another service on the port (torchrun's store, say) is named, not read as an id.
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let other_port = other.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = other.accept() {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let lost = World {
            rank: 1,
            size: 2,
            local_rank: 1,
            master: Some(("127.0.0.1".into(), other_port)),
        };
        let e = exchange_id(&lost, || Ok(vec![])).unwrap_err();
        assert!(e.contains("not a sieve rank 0"), "{e}");
        let none = World {
            rank: 1,
            size: 2,
            local_rank: 1,
            master: None,
        };
        assert!(exchange_id(&none, || Ok(vec![]))
            .unwrap_err()
            .contains("MASTER_ADDR"));
    }
}
