//! The device behind the driver API: memory, loaded modules, streams with their queued work,
//! events, pinned host buffers, and the sticky error of a faulted launch.
//!
//! Stream work is deferred: it runs when the host synchronises (a stream, an event, the
//! context, a copy into pageable memory, a free), so a host read of pinned memory before then
//! sees stale bytes, as on a GPU. `GRADMASK_VGPU_STREAMS=eager` runs work as it is enqueued.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;

use super::code::Code;
use crate::exec::{self, memory::Memory, LaunchConfig, Options, Traffic};
use crate::ptx::ir::Module;

/// One unit of queued stream work.
pub enum Work {
    Launch {
        module: Arc<Module>,
        kernel: usize,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_shared: u32,
        params: Vec<u8>,
    },
    /// From pageable memory: the bytes were taken when the copy was enqueued.
    HtoDBytes {
        dst: u64,
        bytes: Vec<u8>,
    },
    /// From pinned memory: read when the copy runs.
    HtoDPinned {
        dst: u64,
        src: usize,
        len: usize,
    },
    DtoH {
        dst: usize,
        src: u64,
        len: usize,
    },
    DtoD {
        dst: u64,
        src: u64,
        len: u64,
    },
    Memset {
        dst: u64,
        value: u32,
        elem: u8,
        count: u64,
    },
    Free {
        ptr: u64,
    },
    Record {
        event: u64,
    },
    Wait {
        stream: u64,
        upto: u64,
    },
    HostFn {
        func: usize,
        data: usize,
    },
}

impl Work {
    /// One line for `GRADMASK_VGPU_TRACE`.
    pub fn describe(&self) -> String {
        match self {
            Work::Launch {
                module,
                kernel,
                grid,
                ..
            } => {
                format!("launch {} grid {grid:?}", module.kernels[*kernel].name)
            }
            Work::HtoDBytes { dst, bytes } => {
                format!("copy {} bytes host -> {dst:#x}", bytes.len())
            }
            Work::HtoDPinned { dst, src, len } => {
                format!("copy {len} bytes pinned {src:#x} -> {dst:#x}")
            }
            Work::DtoH { dst, src, len } => format!("copy {len} bytes {src:#x} -> host {dst:#x}"),
            Work::DtoD { dst, src, len } => format!("copy {len} bytes {src:#x} -> {dst:#x}"),
            Work::Memset {
                dst,
                value,
                elem,
                count,
            } => format!("memset {count} x {elem} bytes of {value:#x} at {dst:#x}"),
            Work::Free { ptr } => format!("free {ptr:#x}"),
            Work::Record { event } => format!("record event {event:#x}"),
            Work::Wait { stream, upto } => format!("wait for stream {stream:#x} item {upto}"),
            Work::HostFn { .. } => "host function".into(),
        }
    }
}

#[derive(Default)]
pub struct Stream {
    pub queue: VecDeque<Work>,
    /// Work items enqueued, and run, since creation.
    pub enqueued: u64,
    pub done: u64,
}

#[derive(Default, Clone, Copy)]
pub struct Event {
    /// The stream and the position in it that completes the event, once recorded.
    pub at: Option<(u64, u64)>,
}

pub struct Device {
    pub mem: Memory,
    pub modules: HashMap<u64, Arc<Module>>,
    /// Parsed modules by a hash of their PTX text: a process that loads the same fatbin many
    /// times (one selector per test case) parses it once.
    pub parsed: HashMap<u64, Arc<Module>>,
    /// Function handle to (module handle, kernel index).
    pub functions: HashMap<u64, (u64, usize)>,
    pub streams: HashMap<u64, Stream>,
    pub events: HashMap<u64, Event>,
    /// Pinned host allocations: address to (length, layout size).
    pub pinned: BTreeMap<usize, usize>,
    pub next_handle: u64,
    pub opts: Options,
    pub eager: bool,
    pub sticky: bool,
    /// The error of a faulted launch; every later call returns it while `sticky`.
    pub error: Option<Code>,
    pub launches: u64,
    pub epoch: u32,
    pub traffic_log: Option<std::fs::File>,
    pub primary_retains: u32,
    /// `GRADMASK_VGPU_TRACE=1`: print every queued and executed work item.
    pub trace: bool,
}

impl Device {
    pub fn from_env() -> Device {
        let seed = std::env::var("GRADMASK_VGPU_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        let its = std::env::var("GRADMASK_VGPU_ITS").is_ok_and(|v| v == "1");
        let eager = std::env::var("GRADMASK_VGPU_STREAMS").is_ok_and(|v| v == "eager");
        let sticky = !std::env::var("GRADMASK_VGPU_STICKY").is_ok_and(|v| v == "0");
        let traffic_log = std::env::var("GRADMASK_VGPU_TRAFFIC")
            .ok()
            .and_then(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .ok()
            });
        if std::env::var("GRADMASK_VGPU_QUIET").is_err() {
            eprintln!(
                "gradmask-vgpu: PTX interpreter standing in for libcuda (seed {seed}{}, {} streams)",
                if its { ", independent thread scheduling" } else { "" },
                if eager { "eager" } else { "deferred" }
            );
        }
        let mut streams = HashMap::new();
        streams.insert(0, Stream::default());
        Device {
            mem: Memory::default(),
            modules: HashMap::new(),
            parsed: HashMap::new(),
            functions: HashMap::new(),
            streams,
            events: HashMap::new(),
            pinned: BTreeMap::new(),
            next_handle: 0x1000,
            opts: Options { seed, its },
            eager,
            sticky,
            error: None,
            launches: 0,
            epoch: 0,
            traffic_log,
            primary_retains: 0,
            trace: std::env::var("GRADMASK_VGPU_TRACE").is_ok_and(|v| v == "1"),
        }
    }

    pub fn handle(&mut self) -> u64 {
        self.next_handle += 16;
        self.next_handle
    }

    /// The pinned allocation holding `len` bytes at host address `ptr`, if any.
    pub fn is_pinned(&self, ptr: usize, len: usize) -> bool {
        self.pinned
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&base, &size)| ptr + len <= base + size)
    }

    /// Queues work on `stream` (eager mode runs it at once).
    pub fn enqueue(&mut self, stream: u64, work: Work) -> Result<(), Code> {
        if self.trace {
            eprintln!(
                "gradmask-vgpu trace: stream {stream:#x} queues {}",
                work.describe()
            );
        }
        let s = self.streams.get_mut(&stream).ok_or(Code::InvalidHandle)?;
        s.queue.push_back(work);
        s.enqueued += 1;
        if self.eager {
            let upto = s.enqueued;
            self.run_stream(stream, upto)?;
        }
        Ok(())
    }

    /// Runs `stream`'s work until `upto` items have completed.
    pub fn run_stream(&mut self, stream: u64, upto: u64) -> Result<(), Code> {
        if let Some(e) = self.error {
            if self.sticky {
                return Err(e);
            }
        }
        loop {
            let s = self.streams.get_mut(&stream).ok_or(Code::InvalidHandle)?;
            if s.done >= upto {
                return Ok(());
            }
            let Some(work) = s.queue.pop_front() else {
                return Ok(());
            };
            s.done += 1;
            if let Err(e) = self.run_work(stream, work) {
                self.error = Some(e);
                return Err(e);
            }
        }
    }

    /// Runs every stream to its end.
    pub fn run_all(&mut self) -> Result<(), Code> {
        let ids: Vec<u64> = self.streams.keys().copied().collect();
        for id in ids {
            let upto = self.streams[&id].enqueued;
            self.run_stream(id, upto)?;
        }
        self.check_sticky()
    }

    pub fn check_sticky(&mut self) -> Result<(), Code> {
        match self.error {
            Some(e) if self.sticky => Err(e),
            Some(e) => {
                self.error = None;
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn run_work(&mut self, stream: u64, work: Work) -> Result<(), Code> {
        if self.trace {
            eprintln!(
                "gradmask-vgpu trace: stream {stream:#x} runs {}",
                work.describe()
            );
        }
        match work {
            Work::Launch {
                module,
                kernel,
                grid,
                block,
                dynamic_shared,
                params,
            } => {
                let k = &module.kernels[kernel];
                let cfg = LaunchConfig {
                    grid,
                    block,
                    dynamic_shared,
                    params: &params,
                };
                self.launches += 1;
                let seq = self.launches;
                let result = exec::run(k, &cfg, &mut self.mem, self.opts, seq, &mut self.epoch);
                match result {
                    Ok(traffic) => {
                        self.log_traffic(&k.name, grid, block, &traffic);
                        Ok(())
                    }
                    Err(fault) => Err(super::code::report_fault(&fault)),
                }
            }
            Work::HtoDBytes { dst, bytes } => self
                .mem
                .write(dst, &bytes)
                .map_err(|_| Code::IllegalAddress),
            Work::HtoDPinned { dst, src, len } => {
                // SAFETY: `src` lies in a live pinned allocation of this device (checked at
                // enqueue; cuMemFreeHost drains every stream before freeing).
                let bytes = unsafe { std::slice::from_raw_parts(src as *const u8, len) };
                self.mem.write(dst, bytes).map_err(|_| Code::IllegalAddress)
            }
            Work::DtoH { dst, src, len } => {
                // SAFETY: `dst` is a pinned allocation (checked at enqueue), or the caller is
                // still inside the synchronous copy call that enqueued this work.
                let out = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, len) };
                self.mem.read(src, out).map_err(|_| Code::IllegalAddress)
            }
            Work::DtoD { dst, src, len } => self
                .mem
                .copy(dst, src, len)
                .map_err(|_| Code::IllegalAddress),
            Work::Memset {
                dst,
                value,
                elem,
                count,
            } => {
                let bytes: Vec<u8> = match elem {
                    1 => vec![value as u8; count as usize],
                    2 => (0..count)
                        .flat_map(|_| (value as u16).to_le_bytes())
                        .collect(),
                    _ => (0..count).flat_map(|_| value.to_le_bytes()).collect(),
                };
                self.mem
                    .write(dst, &bytes)
                    .map_err(|_| Code::IllegalAddress)
            }
            Work::Free { ptr } => self.mem.free(ptr).map_err(|_| Code::InvalidValue),
            Work::Record { .. } => Ok(()),
            Work::Wait {
                stream: other,
                upto,
            } => {
                if other != stream {
                    self.run_stream(other, upto)?;
                }
                Ok(())
            }
            Work::HostFn { func, data } => {
                // SAFETY: cuLaunchHostFunc's contract: `func` is a host function taking `data`.
                let f: extern "C" fn(*mut std::ffi::c_void) = unsafe { std::mem::transmute(func) };
                f(data as *mut std::ffi::c_void);
                Ok(())
            }
        }
    }

    fn log_traffic(&mut self, name: &str, grid: [u32; 3], block: [u32; 3], t: &Traffic) {
        if let Some(log) = &mut self.traffic_log {
            let _ = writeln!(
                log,
                "{{\"kernel\":\"{name}\",\"grid\":[{},{},{}],\"block\":[{},{},{}],\"bytes_read\":{},\"bytes_written\":{},\"sectors_read\":{},\"sectors_written\":{},\"unique_sectors_read\":{},\"unique_sectors_written\":{},\"warp_instructions\":{},\"thread_instructions\":{},\"per_allocation\":[{}]}}",
                grid[0], grid[1], grid[2], block[0], block[1], block[2], t.bytes_read, t.bytes_written,
                t.sectors_read, t.sectors_written, t.unique_sectors_read, t.unique_sectors_written,
                t.warp_instructions, t.thread_instructions,
                t.per_allocation.iter().map(|(b, r, w)| format!("[{b},{r},{w}]")).collect::<Vec<_>>().join(",")
            );
        }
    }
}
