//! `ferry_load`: the load client of the side-by-side benchmark (`bench/run.sh`).
//!
//! A compiled tokio client, so that the client is not the bottleneck; every mode prints its own
//! CPU time (user + system, from `/proc/self/stat`) next to the wall time. Every network wait is
//! bounded by `--timeout-secs`. Modes:
//!
//! - `sessions`: N clients each connect, log in, PASV (or EPSV), LIST, RETR a file, QUIT; at most
//!   `--pace` of them await the greeting at once (0: no pacing, the raw burst).
//! - `idle`: open N logged-in control connections and hold them for `--hold-secs`.
//! - `noop-latency`: one logged-in session sending NOOPs back to back, reporting p50/p99 round
//!   trips for `--secs`, while `--during login-storm` (N clients log in at once, storm after
//!   storm, at least one) or `--during download` (N clients download `--file` over and over)
//!   runs.
//! - `raw`: the reference: a trivial loopback TCP sender and receiver moving `--size-mb` MiB
//!   (from memory, or with sendfile(2) from `--file`).
//!
//! The last line of every mode is `RESULT key=value ...` for the script to parse.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio::time::timeout;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Sessions,
    Idle,
    NoopLatency,
    Raw,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum During {
    Nothing,
    LoginStorm,
    Download,
}

/// Load client for benchmarking FTP servers.
#[derive(Parser, Clone)]
struct Opts {
    /// What to do.
    #[arg(value_enum)]
    mode: Mode,
    /// Server control address.
    #[arg(long, default_value = "127.0.0.1:2121")]
    addr: SocketAddr,
    /// Account name.
    #[arg(long, default_value = "bench")]
    user: String,
    /// Password.
    #[arg(long, default_value = "bench-pass")]
    pass: String,
    /// Clients (sessions, idle, the background of noop-latency).
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// At most this many connections awaiting the greeting at once (0: unpaced).
    #[arg(long, default_value_t = 32)]
    pace: usize,
    /// File to RETR (sessions, download) or to sendfile (raw).
    #[arg(long, default_value = "64k.bin")]
    file: String,
    /// Use EPSV instead of PASV.
    #[arg(long)]
    epsv: bool,
    /// Bound on every network wait.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// idle: how long to hold the connections after reporting READY.
    #[arg(long, default_value_t = 600)]
    hold_secs: u64,
    /// noop-latency: the background load.
    #[arg(long, value_enum, default_value = "nothing")]
    during: During,
    /// noop-latency: seconds of measuring (at least one whole login storm).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// raw: MiB to move.
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// sessions: threads, each with its own single-threaded runtime and a share of the clients.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

type Res<T> = Result<T, String>;

/// User + system CPU seconds of this process so far (fields 14 and 15 of /proc/self/stat).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every Linux ABI that matters here.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// One FTP control connection with bounded waits.
struct Control {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    limit: Duration,
    line: String,
}

impl Control {
    async fn connect(addr: SocketAddr, limit: Duration) -> Res<Self> {
        let stream = timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (r, w) = stream.into_split();
        Ok(Control {
            rd: BufReader::with_capacity(1024, r),
            wr: w,
            limit,
            line: String::new(),
        })
    }

    /// Reads one (possibly multi-line) reply; returns its code and last line.
    async fn reply(&mut self) -> Res<(u16, String)> {
        let mut first_code: Option<u16> = None;
        loop {
            self.line.clear();
            let n = timeout(self.limit, self.rd.read_line(&mut self.line))
                .await
                .map_err(|_| "reply timeout".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            let b = self.line.as_bytes();
            if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) {
                continue; // continuation line of a multi-line reply
            }
            let code: u16 = self.line[..3].parse().map_err(|_| "bad code")?;
            let first = *first_code.get_or_insert(code);
            if b[3] == b' ' && code == first {
                return Ok((code, self.line.trim_end().to_string()));
            }
        }
    }

    async fn send(&mut self, cmd: &str) -> Res<()> {
        let line = format!("{cmd}\r\n");
        timeout(self.limit, self.wr.write_all(line.as_bytes()))
            .await
            .map_err(|_| "write timeout".to_string())?
            .map_err(|e| format!("write: {e}"))
    }

    /// Sends a command and checks the reply's first digit.
    async fn cmd(&mut self, cmd: &str, class: u16) -> Res<(u16, String)> {
        let verb = cmd.split(' ').next().unwrap_or(cmd);
        self.send(cmd).await?;
        let (code, text) = self.reply().await.map_err(|e| format!("{verb}: {e}"))?;
        if code / 100 != class {
            return Err(format!("{verb}: {text}"));
        }
        Ok((code, text))
    }

    async fn login(&mut self, user: &str, pass: &str) -> Res<()> {
        let (code, _) = self.cmd(&format!("USER {user}"), 3).await.or_else(|e| {
            // Some servers log in at USER already (230); treat that as done.
            if e.contains("230") {
                Ok((230, e))
            } else {
                Err(e)
            }
        })?;
        if code == 230 {
            return Ok(());
        }
        self.cmd(&format!("PASS {pass}"), 2).await?;
        Ok(())
    }

    /// PASV or EPSV, then connects the data channel.
    async fn passive(&mut self, epsv: bool) -> Res<TcpStream> {
        let port = if epsv {
            let (_, text) = self.cmd("EPSV", 2).await?;
            let inner = text.split('(').nth(1).ok_or("EPSV reply")?;
            let port = inner.trim_matches(|c| c == '|' || c == ')' || c == '.');
            port.parse::<u16>()
                .map_err(|_| format!("EPSV port: {text}"))?
        } else {
            let (_, text) = self.cmd("PASV", 2).await?;
            let start = text.find('(').ok_or("PASV reply")? + 1;
            let end = text[start..].find(')').ok_or("PASV reply")? + start;
            let nums: Vec<u16> = text[start..end]
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            if nums.len() != 6 {
                return Err(format!("PASV reply: {text}"));
            }
            nums[4] * 256 + nums[5]
        };
        let addr = SocketAddr::new(self.wr.peer_addr().map_err(|e| e.to_string())?.ip(), port);
        timeout(self.limit, TcpStream::connect(addr))
            .await
            .map_err(|_| "data connect timeout".to_string())?
            .map_err(|e| format!("data connect: {e}"))
    }

    /// A transfer command that reads from the data channel to its end; returns the bytes read.
    async fn download(&mut self, cmd: &str, epsv: bool, buf: &mut [u8]) -> Res<u64> {
        let mut data = self.passive(epsv).await?;
        self.cmd(cmd, 1).await?;
        let mut total = 0u64;
        loop {
            let n = timeout(self.limit, data.read(buf))
                .await
                .map_err(|_| "data timeout".to_string())?
                .map_err(|e| format!("data read: {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        drop(data);
        let (code, text) = self
            .reply()
            .await
            .map_err(|e| format!("end of {cmd}: {e}"))?;
        if code / 100 != 2 {
            return Err(format!("after {cmd}: {text}"));
        }
        Ok(total)
    }
}

/// Connect (paced by `gate` until the greeting) and log in.
async fn open_logged_in(o: &Opts, gate: Option<&Semaphore>) -> Res<Control> {
    let limit = Duration::from_secs(o.timeout_secs);
    let permit = match gate {
        Some(g) => Some(g.acquire().await.map_err(|e| e.to_string())?),
        None => None,
    };
    let mut c = Control::connect(o.addr, limit).await?;
    let (code, text) = c.reply().await.map_err(|e| format!("greeting: {e}"))?;
    drop(permit);
    if code != 220 {
        return Err(format!("greeting: {text}"));
    }
    c.login(&o.user, &o.pass).await?;
    Ok(c)
}

async fn one_session(o: Arc<Opts>, gate: Option<Arc<Semaphore>>) -> Res<Duration> {
    let start = Instant::now();
    let mut c = open_logged_in(&o, gate.as_deref()).await?;
    c.cmd("TYPE I", 2).await?;
    let mut buf = vec![0u8; 64 * 1024];
    c.download("LIST", o.epsv, &mut buf).await?;
    let got = c
        .download(&format!("RETR {}", o.file), o.epsv, &mut buf)
        .await?;
    if got == 0 {
        return Err("RETR: empty".into());
    }
    c.cmd("QUIT", 2).await?;
    Ok(start.elapsed())
}

fn gate(pace: usize) -> Option<Arc<Semaphore>> {
    (pace > 0).then(|| Arc::new(Semaphore::new(pace)))
}

/// Runs `clients` sessions at once (paced); returns (wall, sorted session times, errors).
async fn run_sessions(o: Arc<Opts>) -> (Duration, Vec<Duration>, Vec<String>) {
    let g = gate(o.pace);
    let start = Instant::now();
    let tasks: Vec<_> = (0..o.clients)
        .map(|_| tokio::spawn(one_session(o.clone(), g.clone())))
        .collect();
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => times.push(d),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    times.sort();
    (start.elapsed(), times, errors)
}

fn print_errors(errors: &[String]) {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for e in errors {
        match kinds.iter_mut().find(|(k, _)| k == e) {
            Some((_, n)) => *n += 1,
            None => kinds.push((e.clone(), 1)),
        }
    }
    for (k, n) in kinds.iter().take(5) {
        eprintln!("  {n} x {k}");
    }
}

fn mode_sessions(o: &Arc<Opts>) -> Res<()> {
    let cpu0 = cpu_secs();
    let threads = o.threads.clamp(1, o.clients.max(1));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let mut share = (**o).clone();
            share.clients = o.clients / threads + usize::from(i < o.clients % threads);
            share.pace = if o.pace == 0 {
                0
            } else {
                (o.pace / threads).max(1)
            };
            std::thread::spawn(move || {
                runtime().map(|rt| rt.block_on(run_sessions(Arc::new(share))))
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        let (_, t, e) = h
            .join()
            .map_err(|_| "thread panicked")?
            .map_err(|e| e.to_string())?;
        times.extend(t);
        errors.extend(e);
    }
    let wall = start.elapsed();
    times.sort();
    let cpu = cpu_secs() - cpu0;
    let ok = times.len();
    let rate = ok as f64 / wall.as_secs_f64();
    println!(
        "{} sessions ({} ok, {} errors, pace {}): {:.2} s, {:.1} sessions/s, p50 {:.1} ms, p99 {:.1} ms, client CPU {:.2} s ({:.0}% of one core)",
        o.clients,
        ok,
        errors.len(),
        o.pace,
        wall.as_secs_f64(),
        rate,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        cpu,
        100.0 * cpu / wall.as_secs_f64()
    );
    print_errors(&errors);
    println!(
        "RESULT total_s={:.3} sessions_per_s={:.1} p50_ms={:.1} p99_ms={:.1} ok={} errors={} client_cpu_s={:.2}",
        wall.as_secs_f64(),
        rate,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        ok,
        errors.len(),
        cpu
    );
    Ok(())
}

async fn mode_idle(o: Arc<Opts>) {
    let g = gate(o.pace);
    let start = Instant::now();
    let tasks: Vec<_> = (0..o.clients)
        .map(|_| {
            let (o, g) = (o.clone(), g.clone());
            tokio::spawn(async move { open_logged_in(&o, g.as_deref()).await })
        })
        .collect();
    let mut held = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => held.push(c),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let opened = start.elapsed();
    // A server past its limit may accept and then close: count only connections still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut buf = [0u8; 256];
    held.retain_mut(|c| match c.rd.get_ref().try_read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true, // a notice, still open
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    });
    println!(
        "{} of {} logged-in idle sessions held ({} errors) after {:.1} s",
        held.len(),
        o.clients,
        errors.len(),
        opened.as_secs_f64()
    );
    print_errors(&errors);
    println!(
        "RESULT held={} errors={} open_s={:.2} client_cpu_s={:.2}",
        held.len(),
        errors.len(),
        opened.as_secs_f64(),
        cpu_secs()
    );
    println!("READY");
    tokio::time::sleep(Duration::from_secs(o.hold_secs)).await;
    drop(held);
}

/// The background of noop-latency: login storms (all clients at once, each logs in and
/// QUITs; storm after storm until `stop`, so the probe gets enough samples for a p99) or
/// downloads. Returns the errors seen; `rounds` counts finished storms.
async fn background(
    o: Arc<Opts>,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
) -> usize {
    let mut errors = Vec::new();
    loop {
        let mut tasks = Vec::new();
        for _ in 0..o.clients {
            let (o, stop, bytes) = (o.clone(), stop.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let c = open_logged_in(&o, None).await?;
                if o.during == During::LoginStorm {
                    let mut c = c;
                    return c.cmd("QUIT", 2).await.map(|_| ());
                }
                download(&o, c, &stop, &bytes).await
            }));
        }
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
        if o.during != During::LoginStorm || stop.load(Ordering::Relaxed) || !errors.is_empty() {
            break;
        }
    }
    print_errors(&errors);
    errors.len()
}

/// Downloads `--file` over and over until `stop`.
async fn download(o: &Opts, mut c: Control, stop: &AtomicBool, bytes: &AtomicU64) -> Res<()> {
    c.cmd("TYPE I", 2).await?;
    let mut data = c.passive(o.epsv).await?;
    c.cmd(&format!("RETR {}", o.file), 1).await?;
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = timeout(Duration::from_secs(o.timeout_secs), data.read(&mut buf))
            .await
            .map_err(|_| "data timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            // The file ended: read the 226 and start over.
            drop(data);
            c.reply().await?;
            data = c.passive(o.epsv).await?;
            c.cmd(&format!("RETR {}", o.file), 1).await?;
            continue;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(())
}

fn mode_noop_latency(o: Arc<Opts>) -> Res<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    // The measuring session gets its own thread and runtime, so that the background load of
    // this process cannot delay its timing.
    let limit = Duration::from_secs(o.timeout_secs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut probe = rt.block_on(open_logged_in(&o, None))?;
    let rounds = Arc::new(AtomicU64::new(0));
    let bg = (o.during != During::Nothing).then(|| {
        let (o, stop, bytes, rounds) = (o.clone(), stop.clone(), bytes.clone(), rounds.clone());
        std::thread::spawn(move || {
            runtime().map(|rt| rt.block_on(background(o, stop, bytes, rounds)))
        })
    });
    let start = Instant::now();
    let mut rtts = Vec::new();
    let result: Res<()> = rt.block_on(async {
        loop {
            let t = Instant::now();
            probe.cmd("NOOP", 2).await?;
            rtts.push(t.elapsed());
            // A login storm is measured whole: at least one, then as many as fit in --secs.
            let storm_ended = o.during != During::LoginStorm
                || rounds.load(Ordering::Relaxed) > 0
                || bg.as_ref().is_some_and(|h| h.is_finished());
            if storm_ended && start.elapsed().as_secs() >= o.secs {
                return Ok(());
            }
            if start.elapsed() > limit * 10 {
                return Err("background did not finish".into());
            }
            // Pace the probe a little: one NOOP per millisecond at most.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    stop.store(true, Ordering::Relaxed);
    let bg_errors = bg
        .and_then(|h| h.join().ok())
        .and_then(|r| r.ok())
        .unwrap_or(0);
    result?;
    let wall = start.elapsed().as_secs_f64();
    rtts.sort();
    let mib_s = bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64 / wall;
    println!(
        "{} NOOPs in {:.1} s during {} of {} clients ({} errors{}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        rtts.len(),
        wall,
        match o.during {
            During::Nothing => "nothing".to_owned(),
            During::LoginStorm => format!("{} login storms", rounds.load(Ordering::Relaxed)),
            During::Download => "downloads".to_owned(),
        },
        o.clients,
        bg_errors,
        if o.during == During::Download {
            format!(", {mib_s:.0} MiB/s in all")
        } else {
            String::new()
        },
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        percentile(&rtts, 1.0)
    );
    println!(
        "RESULT noops={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} bg_errors={} bg_mib_s={:.0} client_cpu_s={:.2}",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        percentile(&rtts, 1.0),
        bg_errors,
        mib_s,
        cpu_secs()
    );
    Ok(())
}

/// Raw loopback TCP: one sender (memory, or sendfile from `--file`) and one receiver.
fn mode_raw(o: &Opts) -> Res<()> {
    use std::io::{Read, Write};
    let size = o.size_mb << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let file = (o.file != "64k.bin").then(|| o.file.clone());
    let sender = std::thread::spawn(move || -> Res<()> {
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        if let Some(path) = file {
            let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            let mut left = size.min(f.metadata().map_err(|e| e.to_string())?.len()) as usize;
            let mut off: i64 = 0;
            while left > 0 {
                let n = nix::sys::sendfile::sendfile(&s, &f, Some(&mut off), left.min(1 << 30))
                    .map_err(|e| format!("sendfile: {e}"))?;
                if n == 0 {
                    break;
                }
                left -= n;
            }
        } else {
            let buf = vec![0x5au8; 1 << 20];
            let mut left = size;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                left -= n as u64;
            }
        }
        Ok(())
    });
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let mut r = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    r.set_read_timeout(Some(Duration::from_secs(o.timeout_secs)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let wall = start.elapsed().as_secs_f64();
    sender.join().map_err(|_| "sender panicked")??;
    let mib_s = total as f64 / (1 << 20) as f64 / wall;
    println!(
        "raw loopback TCP ({}): {} MiB in {:.2} s = {:.0} MiB/s, CPU {:.2} s",
        if o.file != "64k.bin" {
            "sendfile"
        } else {
            "write from memory"
        },
        total >> 20,
        wall,
        mib_s,
        cpu_secs() - cpu0
    );
    println!("RESULT mib_s={mib_s:.0} bytes={total}");
    Ok(())
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn main() -> std::process::ExitCode {
    let o = Arc::new(Opts::parse());
    let result = match o.mode {
        Mode::Raw => mode_raw(&o),
        Mode::NoopLatency => mode_noop_latency(o.clone()),
        Mode::Sessions => mode_sessions(&o),
        Mode::Idle => runtime()
            .map_err(|e| e.to_string())
            .map(|rt| rt.block_on(mode_idle(o.clone()))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry_load: {e}");
            println!("RESULT error=1");
            std::process::ExitCode::FAILURE
        }
    }
}
