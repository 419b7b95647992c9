//! The physical floor of every benchmark row: the round-trip time of a small frame over TCP on
//! 127.0.0.1, with nothing behind it (no Erlang distribution, no term codec, no actor).
//!
//! A tokio echo server and a client in one process, each on its own thread with a
//! single-threaded runtime; the client sends a length-prefixed frame (4-byte big-endian length,
//! as Erlang distribution frames after the handshake) and waits for the echo, `--iters` times
//! after `--warmup` rounds, with `TCP_NODELAY` on both ends.
//!
//! `--server-cpu N` / `--client-cpu N` pin the two threads (Linux `sched_setaffinity`): on one
//! CPU a round trip costs no cross-CPU wake-up, on two it costs two, which on some virtual
//! machines is most of the time.
//!
//!     cargo build --release --example loopback_rtt
//!     target/release/examples/loopback_rtt [--iters N] [--warmup N] [--size BYTES]
//!                                          [--server-cpu N] [--client-cpu N] [--json]
//!
//! Prints p50 / p99 / mean round-trip time in microseconds (one JSON object with `--json`).

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Options {
    iters: usize,
    warmup: usize,
    size: usize,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
    json: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        iters: 20_000,
        warmup: 2_000,
        size: 64,
        server_cpu: None,
        client_cpu: None,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a non-negative integer"))
        };
        match arg.as_str() {
            "--iters" => options.iters = number("--iters")?.max(1),
            "--warmup" => options.warmup = number("--warmup")?,
            "--size" => options.size = number("--size")?,
            "--server-cpu" => options.server_cpu = Some(number("--server-cpu")?),
            "--client-cpu" => options.client_cpu = Some(number("--client-cpu")?),
            "--json" => options.json = true,
            "-h" | "--help" => {
                println!(
                    "loopback_rtt [--iters N] [--warmup N] [--size BYTES] [--server-cpu N] [--client-cpu N] [--json]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

async fn read_frame(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let length = u32::from_be_bytes(header) as usize;
    buffer.resize(length, 0);
    stream.read_exact(buffer).await?;
    Ok(())
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = Vec::new();
    let mut frame = Vec::new();
    loop {
        match read_frame(&mut stream, &mut buffer).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        frame.clear();
        frame.extend_from_slice(&(buffer.len() as u32).to_be_bytes());
        frame.extend_from_slice(&buffer);
        stream.write_all(&frame).await?;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Pins the calling thread to one CPU (Linux); a no-op elsewhere.
fn pin_to(cpu: Option<usize>) -> Result<(), String> {
    let Some(cpu) = cpu else { return Ok(()) };
    #[cfg(target_os = "linux")]
    {
        unsafe extern "C" {
            fn sched_setaffinity(pid: i32, cpusetsize: usize, mask: *const u64) -> i32;
        }
        let mut mask = [0u64; 16];
        if cpu >= mask.len() * 64 {
            return Err(format!("cpu {cpu} out of range"));
        }
        mask[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: the mask is a valid cpu_set_t-sized buffer; pid 0 is the calling thread.
        let rc = unsafe { sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr()) };
        if rc != 0 {
            return Err(format!(
                "sched_setaffinity({cpu}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn run_client(address: SocketAddr, options: &Options) -> std::io::Result<Vec<f64>> {
    runtime().block_on(async {
        let mut client = TcpStream::connect(address).await?;
        client.set_nodelay(true)?;
        let mut frame = Vec::with_capacity(4 + options.size);
        frame.extend_from_slice(&(options.size as u32).to_be_bytes());
        frame.extend((0..options.size).map(|i| i as u8));
        let mut reply = Vec::new();
        let mut samples = Vec::with_capacity(options.iters);

        for round in 0..options.warmup + options.iters {
            let started = Instant::now();
            client.write_all(&frame).await?;
            read_frame(&mut client, &mut reply).await?;
            let elapsed = started.elapsed();
            if reply.len() != options.size {
                return Err(std::io::Error::other(format!(
                    "echo of {} bytes, expected {}",
                    reply.len(),
                    options.size
                )));
            }
            if round >= options.warmup {
                samples.push(elapsed.as_secs_f64() * 1e6);
            }
        }
        Ok(samples)
    })
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loopback_rtt: {message}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(options) {
        eprintln!("loopback_rtt: {e}");
        std::process::exit(1);
    }
}

fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let server_cpu = options.server_cpu;
    let server = std::thread::spawn(move || -> Result<(), String> {
        pin_to(server_cpu)?;
        runtime().block_on(async move {
            let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            echo(stream).await.map_err(|e| e.to_string())
        })
    });

    pin_to(options.client_cpu)?;
    let mut samples = run_client(address, &options)?;
    server.join().map_err(|_| "echo thread panicked")??;

    samples.sort_by(|a, b| a.total_cmp(b));
    let p50 = percentile(&samples, 50.0);
    let p99 = percentile(&samples, 99.0);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let cpus = match (options.server_cpu, options.client_cpu) {
        (Some(s), Some(c)) => format!("\"server_cpu\":{s},\"client_cpu\":{c},"),
        _ => String::new(),
    };
    if options.json {
        println!(
            "{{{cpus}\"iters\":{},\"frame_bytes\":{},\"p50_us\":{:.2},\"p99_us\":{:.2},\"mean_us\":{:.2}}}",
            samples.len(),
            options.size + 4,
            p50,
            p99,
            mean
        );
    } else {
        println!(
            "loopback TCP round trip of a {}-byte frame over {} rounds: p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs",
            options.size + 4,
            samples.len(),
            p50,
            p99,
            mean
        );
    }
    Ok(())
}
