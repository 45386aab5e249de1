//! `watch`: the cluster, read through one node every `--interval` and shown
//! full-screen (the alternate screen, restored on q, Esc, Ctrl-C, SIGTERM, an
//! error or a panic), or as plain frames when stdout is not a terminal or with
//! `--once` / `--count N`, for scripts.
//!
//! What a frame shows is `view.rs`'s, from two readings; this file reads the
//! node, keeps time and owns the terminal. A node that cannot be reached shows
//! as an error line above the last good reading, and the view keeps trying;
//! with `--count N` the run then exits 1 after its frames.

mod view;

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, queue, terminal};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::Outcome;
use crate::client::AdminClient;
use crate::duration;
use view::{Counters, Frame, Sample};

/// The shortest `--interval`: faster would only load the node.
const INTERVAL_MIN: Duration = Duration::from_millis(100);
/// How often the key reader looks whether the view has ended.
const KEY_POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub(crate) struct WatchArgs {
    /// How often to read the cluster: 1s, 500ms, 5s.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Print one plain frame and exit (as --count 1).
    #[arg(long, conflicts_with = "count")]
    once: bool,
    /// Print N plain frames, one every --interval, and exit: 0 when every
    /// reading reached the node, 1 otherwise.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = duration::parse(text)?;
    if interval < INTERVAL_MIN {
        return Err(format!(
            "{text:?} is too short: at least {}",
            duration::show(INTERVAL_MIN)
        ));
    }
    Ok(interval)
}

pub(crate) async fn run(
    client: &AdminClient,
    args: &WatchArgs,
    json: bool,
) -> anyhow::Result<Outcome> {
    let frames = args.count.or(args.once.then_some(1));
    if frames.is_none() && !json && std::io::stdout().is_terminal() {
        return full_screen(client, args.interval).await;
    }
    plain(client, args.interval, frames, json).await
}

/// The readings so far: the last good one, for rates and for the view while
/// the node cannot be reached.
#[derive(Default)]
struct Readings {
    /// The last good reading and when it was made.
    last: Option<(Sample, Instant)>,
}

/// What one reading gave: a frame, or why there is none.
enum Reading {
    Frame(Box<Frame>),
    Failed(anyhow::Error),
}

impl Readings {
    /// Reads the cluster once and makes the frame, with rates against the
    /// last good reading.
    async fn next(&mut self, client: &AdminClient) -> Reading {
        let at = Instant::now();
        match read(client).await {
            Ok(sample) => {
                let before = self
                    .last
                    .as_ref()
                    .map(|(sample, then)| (sample, at.duration_since(*then)));
                let frame = Frame::new(&sample, before);
                self.last = Some((sample, at));
                Reading::Frame(Box::new(frame))
            }
            Err(e) => Reading::Failed(e),
        }
    }

    /// The frame of the last good reading, without rates, for the view while
    /// the node cannot be reached.
    fn stale(&self) -> Option<Frame> {
        self.last
            .as_ref()
            .map(|(sample, _)| Frame::new(sample, None))
    }
}

/// One reading: the members, the node's status and metrics, and each drain.
async fn read(client: &AdminClient) -> anyhow::Result<Sample> {
    let (nodes, status, metrics) = tokio::join!(client.nodes(), client.status(), client.metrics());
    let nodes = nodes?.body;
    let status = status?.body;
    let mut drains = Vec::new();
    for id in Sample::draining(&nodes) {
        let drain = client
            .drain_progress(id)
            .await
            .map(|reply| reply.body)
            .map_err(|e| format!("{e:#}"));
        drains.push((id.to_owned(), drain));
    }
    Ok(Sample {
        nodes,
        status,
        metrics: metrics
            .map(|page| Counters::parse(&page))
            .map_err(|e| format!("{e:#}")),
        drains,
    })
}

/// The first line of every frame: where, how often, when.
fn header(client: &AdminClient, interval: Duration) -> String {
    format!(
        "confabctl watch  {}  every {}  {}",
        client.node_label(),
        duration::show(interval),
        wall_clock()
    )
}

/// The lines of a frame after the header: the reading, or the error and the
/// last good reading.
fn body(reading: &Reading, readings: &Readings, interval: Duration) -> Vec<String> {
    match reading {
        Reading::Frame(frame) => frame.lines(),
        Reading::Failed(e) => {
            let mut lines = vec![format!(
                "error: {e:#}; retrying every {}",
                duration::show(interval)
            )];
            if let Some(stale) = readings.stale() {
                lines.push("the last good reading:".to_owned());
                lines.extend(stale.lines());
            }
            lines
        }
    }
}

/// Plain frames on stdout, a blank line after each (one JSON object a line
/// with `--json`); `frames` of them, or until stdout closes.
async fn plain(
    client: &AdminClient,
    interval: Duration,
    frames: Option<u64>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut readings = Readings::default();
    let mut failures = 0u64;
    let mut printed = 0u64;
    while frames.is_none_or(|n| printed < n) {
        ticker.tick().await;
        let reading = readings.next(client).await;
        let text = if json {
            json_line(&reading)
        } else {
            let mut lines = vec![header(client, interval)];
            lines.extend(body(&reading, &readings, interval));
            lines.join("\n") + "\n"
        };
        if matches!(reading, Reading::Failed(_)) {
            failures += 1;
        }
        if !write_frame(&text)? {
            return Ok(Outcome::Done);
        }
        printed += 1;
    }
    if failures > 0 {
        eprintln!("error: {failures} of {printed} readings could not reach the node");
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Done)
}

/// A frame as one line of JSON: the frame's fields, or `error`.
fn json_line(reading: &Reading) -> String {
    let mut value = match reading {
        Reading::Frame(frame) => serde_json::to_value(frame).unwrap_or_default(),
        Reading::Failed(e) => serde_json::json!({ "error": format!("{e:#}") }),
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("at_unix_ms".to_owned(), crate::now_ms().into());
    }
    value.to_string()
}

/// Writes a frame and a newline; `false` once stdout is closed (`| head`).
fn write_frame(text: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What the key reader tells the view.
enum Input {
    /// q, Esc or Ctrl-C.
    Quit,
    /// The terminal changed size: draw again.
    Resize,
}

/// The full-screen view, until q, Esc, Ctrl-C or SIGTERM.
async fn full_screen(client: &AdminClient, interval: Duration) -> anyhow::Result<Outcome> {
    use tokio::signal::unix::{SignalKind, signal};
    let screen = Screen::enter()?;
    let mut input = read_keys();
    // Whether keys can be read; without them raw mode is left, so that
    // Ctrl-C is SIGINT again.
    let mut keys_open = true;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut readings = Readings::default();
    let mut lines = vec![
        header(client, interval),
        "reading the cluster...".to_owned(),
    ];
    loop {
        screen.draw(&lines)?;
        tokio::select! {
            _ = ticker.tick() => {
                // A slow node must not make the keys wait.
                let reading = tokio::select! {
                    reading = readings.next(client) => reading,
                    Some(Input::Quit) = input.recv(), if keys_open => break,
                    _ = interrupt.recv() => break,
                };
                lines = vec![header(client, interval)];
                lines.extend(body(&reading, &readings, interval));
                lines.push(String::new());
                lines.push("q, Esc or Ctrl-C quits".to_owned());
            }
            key = input.recv(), if keys_open => match key {
                Some(Input::Resize) => {}
                Some(Input::Quit) => break,
                None => {
                    keys_open = false;
                    let _ = terminal::disable_raw_mode();
                }
            },
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
        }
    }
    drop(screen);
    Ok(Outcome::Done)
}

/// Reads the terminal's events on a thread of its own (crossterm's reads
/// block) until the view drops the receiver.
fn read_keys() -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match crossterm::event::poll(KEY_POLL) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => break,
            }
            let input = match crossterm::event::read() {
                Ok(Event::Key(key)) if quits(&key) => Input::Quit,
                Ok(Event::Resize(..)) => Input::Resize,
                Ok(_) => continue,
                Err(_) => break,
            };
            if tx.blocking_send(input).is_err() {
                break;
            }
        }
    });
    rx
}

/// q, Esc and Ctrl-C quit (in raw mode Ctrl-C is a key, not SIGINT).
fn quits(key: &KeyEvent) -> bool {
    if key.kind != KeyEventKind::Press {
        return false;
    }
    match key.code {
        KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
        KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
        _ => false,
    }
}

/// Whether the terminal is in the view's state (raw, alternate screen, no
/// cursor) and must be restored.
static SCREEN_ACTIVE: AtomicBool = AtomicBool::new(false);

/// The terminal while the view owns it; dropping it (or a panic) restores it.
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        SCREEN_ACTIVE.store(true, Ordering::SeqCst);
        let screen = Screen;
        terminal::enable_raw_mode()?;
        let mut stdout = std::io::stdout();
        crossterm::execute!(stdout, terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    /// Draws `lines` from the top, each cut to the terminal's width.
    fn draw(&self, lines: &[String]) -> anyhow::Result<()> {
        // A terminal that reports no size (some ptys) gets the classic one.
        let (columns, rows) = match terminal::size() {
            Ok((columns, rows)) if columns > 0 && rows > 0 => (columns, rows),
            _ => (80, 24),
        };
        let mut stdout = std::io::stdout().lock();
        for (row, line) in (0..rows).zip(lines) {
            let shown: String = line.chars().take(usize::from(columns)).collect();
            queue!(
                stdout,
                cursor::MoveTo(0, row),
                crossterm::style::Print(shown),
                terminal::Clear(terminal::ClearType::UntilNewLine)
            )?;
        }
        let used = u16::try_from(lines.len()).unwrap_or(u16::MAX).min(rows);
        if used < rows {
            queue!(
                stdout,
                cursor::MoveTo(0, used),
                terminal::Clear(terminal::ClearType::FromCursorDown)
            )?;
        }
        stdout.flush()?;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Leaves the alternate screen, shows the cursor, ends raw mode; once.
fn restore_terminal() {
    if SCREEN_ACTIVE.swap(false, Ordering::SeqCst) {
        let mut stdout = std::io::stdout();
        let _ = crossterm::execute!(stdout, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// The time of day, UTC, for the header: `14:03:07 UTC`.
fn wall_clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
