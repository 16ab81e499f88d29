//! The live view of a run: a full-screen dashboard on stderr when it is a terminal, else a
//! progress line a second.

use std::io::{IsTerminal as _, Stderr};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table, Wrap};

use super::instance::{Fleet, Life};
use super::sample::{Sample, Timeline};

/// Whether a dashboard can be drawn: stderr is a terminal.
pub(crate) fn available() -> bool {
    std::io::stderr().is_terminal()
}

/// The dashboard's terminal: the alternate screen of stderr, restored on drop.
pub(crate) struct Screen {
    terminal: Terminal<CrosstermBackend<Stderr>>,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screen").finish_non_exhaustive()
    }
}

impl Screen {
    pub(crate) fn open() -> std::io::Result<Self> {
        let mut stderr = std::io::stderr();
        execute!(stderr, terminal::EnterAlternateScreen, cursor::Hide)?;
        let terminal = Terminal::new(CrosstermBackend::new(stderr))?;
        Ok(Self { terminal })
    }

    pub(crate) fn draw(
        &mut self,
        sample: &Sample,
        timeline: &Timeline,
        fleet: &Fleet,
        duration: f64,
    ) -> std::io::Result<()> {
        self.terminal
            .draw(|frame| render(frame, sample, timeline, fleet, duration))
            .map(|_| ())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            self.terminal.backend_mut(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// The line printed each second when there is no dashboard.
pub(crate) fn progress_line(s: &Sample, devices: u32) -> String {
    let alerts = s.alerts.iter().filter(|a| a.state == "firing").count();
    let lives: Vec<String> = s
        .instances
        .iter()
        .map(|i| format!("{}:{}", i.held, &i.life.name()[..1]))
        .collect();
    format!(
        "[{:>5.1}s] {:>8.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  held {}/{devices} [{}]  active {}  errors {}  alerts firing {alerts}",
        s.t,
        s.total_rate,
        s.p50_ms,
        s.p99_ms,
        s.held(),
        lives.join(" "),
        s.active_devices.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        s.errors.values().sum::<u64>(),
    )
}

fn block(title: &str) -> Block<'_> {
    Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, Style::default().add_modifier(Modifier::BOLD)))
}

fn render(frame: &mut ratatui::Frame<'_>, s: &Sample, timeline: &Timeline, fleet: &Fleet, duration: f64) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(9),
            Constraint::Length(fleet.names.len() as u16 + 3),
            Constraint::Length(8),
            Constraint::Min(4),
        ])
        .split(frame.area());
    let title = format!(
        " stateful-redis fleet: {} devices, {} instances, lease ttl {:.1} s   {:.0} s into the run ({:.0} s of traffic)   held {}/{}   active {} ",
        fleet.devices,
        fleet.names.len(),
        fleet.ttl.as_secs_f64(),
        s.t,
        duration,
        s.held(),
        fleet.devices,
        s.active_devices.map_or_else(|| "?".to_owned(), |a| a.to_string()),
    );
    frame.render_widget(
        Paragraph::new(title).style(Style::default().fg(Color::Black).bg(Color::Cyan)),
        rows[0],
    );
    let top = split(rows[1], &[34, 66]);
    let mut ops: Vec<Row<'_>> = s
        .rates
        .iter()
        .map(|(op, rate)| Row::new(vec![(*op).to_owned(), format!("{rate:>9.0}")]))
        .collect();
    ops.push(
        Row::new(vec!["total".to_owned(), format!("{:>9.0}", s.total_rate)])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    );
    frame.render_widget(
        Table::new(ops, [Constraint::Length(12), Constraint::Length(10)])
            .header(Row::new(vec!["operation", "   per s"]).style(Style::default().fg(Color::Yellow)))
            .block(block("Throughput")),
        top[0],
    );
    let latency = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(3),
            Constraint::Length(1),
            Constraint::Length(3),
        ])
        .split(inner(top[1]));
    frame.render_widget(block("Latency (ms)"), top[1]);
    let width = latency[1].width as usize;
    let series = |f: fn(&Sample) -> f64| -> Vec<u64> {
        let start = timeline.samples.len().saturating_sub(width.saturating_sub(1));
        timeline.samples[start..]
            .iter()
            .chain(std::iter::once(s))
            .map(|x| (f(x) * 1000.0) as u64)
            .collect()
    };
    frame.render_widget(Paragraph::new(format!("p50 {:.2} ms", s.p50_ms)), latency[0]);
    frame.render_widget(
        Sparkline::default()
            .data(series(|x| x.p50_ms))
            .style(Style::default().fg(Color::Green)),
        latency[1],
    );
    frame.render_widget(Paragraph::new(format!("p99 {:.2} ms", s.p99_ms)), latency[2]);
    frame.render_widget(
        Sparkline::default()
            .data(series(|x| x.p99_ms))
            .style(Style::default().fg(Color::Magenta)),
        latency[3],
    );
    let instances: Vec<Row<'_>> = s
        .instances
        .iter()
        .map(|i| {
            let colour = match i.life {
                Life::Running => Color::Green,
                Life::Paused => Color::Yellow,
                Life::Killed => Color::Red,
                Life::Starting | Life::Stopped => Color::Gray,
            };
            Row::new(vec![
                i.name.clone(),
                i.life.name().to_owned(),
                i.held.to_string(),
                i.acquired.to_string(),
                i.lost.to_string(),
                i.taken_over.to_string(),
                i.fenced.to_string(),
            ])
            .style(Style::default().fg(colour))
        })
        .collect();
    frame.render_widget(
        Table::new(
            instances,
            [
                Constraint::Length(22),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(11),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(vec![
                "instance",
                "state",
                "held",
                "acquired",
                "lost",
                "taken over",
                "fenced",
            ])
            .style(Style::default().fg(Color::Yellow)),
        )
        .block(block("Leases per instance")),
        rows[2],
    );
    let middle = split(rows[3], &[33, 33, 34]);
    let errors: Vec<Line<'_>> = if s.errors.is_empty() {
        vec![Line::from("none")]
    } else {
        s.errors.iter().map(|(k, n)| Line::from(format!("{k}: {n}"))).collect()
    };
    frame.render_widget(Paragraph::new(errors).block(block("Errors by kind")), middle[0]);
    let pool = vec![
        Line::from(format!("in flight      {}", s.in_flight)),
        Line::from(format!("queue depth    {}", s.queue_depth)),
        Line::from(format!(
            "connections    {} used / {}",
            s.connections_used, s.connections
        )),
        Line::from(format!("pool waiters   {}", s.pool_waiters)),
        Line::from(format!(
            "active devices {}",
            s.active_devices.map_or_else(|| "?".to_owned(), |a| a.to_string())
        )),
    ];
    frame.render_widget(Paragraph::new(pool).block(block("Pool / queue")), middle[1]);
    let mut alerts: Vec<Line<'_>> = s
        .alerts
        .iter()
        .map(|a| {
            let colour = if a.state == "firing" { Color::Red } else { Color::Yellow };
            Line::from(Span::styled(
                format!("{} {} ({})", a.state, a.rule, a.instance),
                Style::default().fg(colour),
            ))
        })
        .collect();
    if alerts.is_empty() {
        alerts.push(Line::from("none pending or firing"));
    }
    frame.render_widget(Paragraph::new(alerts).block(block("Alerts")), middle[2]);
    let bottom = split(rows[4], &[40, 60]);
    let marks: Vec<Line<'_>> = timeline
        .marks
        .iter()
        .rev()
        .map(|m| Line::from(format!("{:>5.1} s  {}", m.t, m.what)))
        .collect();
    frame.render_widget(Paragraph::new(marks).block(block("Events")), bottom[0]);
    let mut advice: Vec<Line<'_>> = timeline
        .suggestions
        .iter()
        .map(|x| Line::from(format!("{:?}: {} -> {}", x.area, x.finding, x.change)))
        .collect();
    if advice.is_empty() {
        advice.push(Line::from("no suggestions"));
    }
    frame.render_widget(
        Paragraph::new(advice).wrap(Wrap { trim: true }).block(block("Advisor")),
        bottom[1],
    );
}

fn split(area: Rect, percents: &[u16]) -> std::rc::Rc<[Rect]> {
    Layout::default()
        .direction(Direction::Horizontal)
        .constraints(percents.iter().map(|&p| Constraint::Percentage(p)))
        .split(area)
}

fn inner(area: Rect) -> Rect {
    Rect {
        x: area.x + 1,
        y: area.y + 1,
        width: area.width.saturating_sub(2),
        height: area.height.saturating_sub(2),
    }
}
