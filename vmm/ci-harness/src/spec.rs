//! The spec file: TOML in, a validated [`Spec`] out, or one error with file, line and column.
//!
//! Pure: the text and the spec's folder in, no file is opened here except to check that the
//! inputs it names exist (so a missing kernel is reported at its line, before any VM starts).

use std::ops::Range;
use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Spanned;

use drvisor_api::MAX_CAPTURE;

/// A spec error: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file.
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place.
    pub at: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A validated spec.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The spec file, as given.
    pub path: PathBuf,
    /// The suite's name: the file name without `.toml`.
    pub name: String,
    /// The VM to boot.
    pub vm: VmSpec,
    /// The checks, in file order.
    pub checks: Vec<Check>,
}

/// `[vm]`, with paths resolved against the spec's folder.
#[derive(Clone, Debug, Default)]
pub struct VmSpec {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub symbols: Option<PathBuf>,
    pub cmdline: String,
    /// `--scenario` of the embedded test guest.
    pub scenario: Option<String>,
    pub vcpus: u32,
    /// `--cpu-features`: CPU features hidden from (`-NAME`) or required for (`+NAME`) the guest.
    pub cpu_features: Option<String>,
    /// `--cpu-model`: the CPU the guest is shown (`host` or `qemu64`).
    pub cpu_model: Option<String>,
    /// `--cpu-vendor`: the vendor string the guest is shown.
    pub cpu_vendor: Option<String>,
    pub mem: u64,
    /// Wall-clock limit for the whole run, in seconds.
    pub timeout: f64,
    /// drvisor's own exit codes accepted as the end of the run (71: an emulation failure on
    /// hosts whose KVM emulates CPL0 code), the reason kept in the report.
    pub accept_exit: Vec<i32>,
    /// Whether reaching `timeout` is an accepted end (a kernel that never powers off).
    pub accept_timeout: bool,
    /// Why the spec cannot run here: with `inputs_missing = "skip"`, the input file that is not
    /// there; for a kvm-unit-tests cfg entry, what it needs that drvisor lacks. Every check is then
    /// skipped with this reason instead of the spec being an error.
    pub not_run: Option<String>,
    /// Whether a `+feature` of `cpu_features` that this host's KVM cannot give is dropped
    /// before the run, with a note in the report ([`crate::qemu_cpu`]), as QEMU's `-cpu` drops
    /// it with a warning: set for a kvm-unit-tests cfg entry. Otherwise (every TOML spec)
    /// `drvisor run` refuses such a feature.
    pub drop_unoffered_features: bool,
    /// The features dropped so, each with its note; filled by [`crate::qemu_cpu`].
    pub dropped_features: Vec<crate::qemu_cpu::DroppedFeature>,
}

/// One `[[check]]`.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    /// 1-based line of the check's table, for messages that come from the run.
    pub line: usize,
    pub kind: CheckKind,
}

/// What a check looks at.
#[derive(Clone, Debug)]
pub enum CheckKind {
    Break(HitCheck),
    Watch(WatchCheck),
    ConsoleMatch(Regex),
    ConsoleNever(Regex),
    Results(ResultsFormat),
    ExitStatus(i64),
}

impl CheckKind {
    /// The hits it looks at, for a break or watch check.
    pub fn hits(&self) -> Option<&HitCheck> {
        match self {
            CheckKind::Break(h) => Some(h),
            CheckKind::Watch(w) => Some(&w.hits),
            _ => None,
        }
    }

    /// Whether both are break checks, or both watch checks, on the same location.
    pub fn same_location(&self, other: &CheckKind) -> bool {
        match (self, other) {
            (CheckKind::Break(a), CheckKind::Break(b)) => a.target == b.target,
            (CheckKind::Watch(a), CheckKind::Watch(b)) => a.hits.target == b.hits.target,
            _ => false,
        }
    }
}

/// A breakpoint or watchpoint and what its hits must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HitCheck {
    /// The `--break` / `--watch` text; hit events carry it as their label.
    pub target: String,
    pub vcpu: Option<u32>,
    pub expect: HitExpect,
    pub on_hit: OnHit,
    /// `if`: only hits at which this condition holds count (and are reported); drvisor
    /// evaluates it at each hit (docs/conditions.md).
    pub condition: Option<String>,
    /// `capture`: stack bytes recorded with each hit (drvisor's `--capture`).
    pub capture: Option<u16>,
    /// `stack_contains`: every counted hit's captured stack has a word that points into this
    /// function.
    pub stack_contains: Option<String>,
}

impl HitCheck {
    /// The stack bytes its hits must carry: `capture` as given, else [`STACK_CONTAINS_CAPTURE`]
    /// for `stack_contains`, else [`ON_HIT_CAPTURE`] for `on_hit = "capture"`, else none.
    pub fn capture_bytes(&self) -> Option<u16> {
        self.capture.or_else(|| {
            if self.stack_contains.is_some() {
                Some(STACK_CONTAINS_CAPTURE)
            } else if self.on_hit == OnHit::Capture {
                Some(ON_HIT_CAPTURE)
            } else {
                None
            }
        })
    }
}

/// The stack bytes an `on_hit = "capture"` check records with its hits, without `capture`.
pub const ON_HIT_CAPTURE: u16 = 128;

/// The stack bytes a `stack_contains` check records with its hits, without `capture`: deep
/// enough for a few kernel frames (a syscall's entry is a few hundred bytes above its handler).
pub const STACK_CONTAINS_CAPTURE: u16 = 1024;

/// A watch: its hits, and the values written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchCheck {
    pub hits: HitCheck,
    pub engine: Option<EngineName>,
    pub values: ValueExpect,
}

/// How many hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HitExpect {
    pub min: u64,
    pub max: Option<u64>,
    /// `hits_per_line`: exactly one hit per console line this matches (it overrides min/max).
    pub per_line: Option<LinePattern>,
}

/// A regex compared by its text, so that expectations stay comparable in tests.
#[derive(Clone, Debug)]
pub struct LinePattern(pub Regex);

impl PartialEq for LinePattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for LinePattern {}

/// Constraints on the values a watch sees written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValueExpect {
    pub values_in: Option<(u64, u64)>,
    pub never_value: Option<u64>,
    pub last_value: Option<u64>,
}

impl ValueExpect {
    /// Whether any value constraint is set (they need the page engine, which reports values).
    pub fn any(&self) -> bool {
        self.values_in.is_some() || self.never_value.is_some() || self.last_value.is_some()
    }
}

/// `on_hit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnHit {
    /// Count only.
    #[default]
    Count,
    /// Record the registers of the first matching or offending hit.
    Capture,
    /// End the run at the first hit.
    Stop,
}

/// `engine` of a watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineName {
    Hw,
    Page,
    Auto,
}

impl EngineName {
    /// The `--engine` value.
    pub fn flag(self) -> &'static str {
        match self {
            EngineName::Hw => "hw",
            EngineName::Page => "page",
            EngineName::Auto => "auto",
        }
    }
}

/// `results`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultsFormat {
    Ktap,
    KvmUnitTests,
}

/// Default of `timeout`, in seconds.
pub const DEFAULT_TIMEOUT: f64 = 60.0;

/// The longest `timeout` a spec may give, in seconds (a week).
pub const MAX_TIMEOUT: f64 = 7.0 * 24.0 * 3600.0;

/// A `cmdline` must be shorter than this many bytes: the x86 boot protocol's command line
/// size, which drvisor's loader applies to the whole line (its own words included).
pub const CMDLINE_MAX: usize = 4096;
/// The models `cpu_model` takes, as `drvisor run --cpu-model` does.
pub const CPU_MODELS: &[&str] = &["host", "qemu64"];

/// The largest spec file read.
pub const SPEC_FILE_MAX: u64 = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    vm: Option<Spanned<RawVm>>,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVm {
    kernel: Option<Spanned<String>>,
    initrd: Option<Spanned<String>>,
    symbols: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    scenario: Option<Spanned<String>>,
    vcpus: Option<Spanned<u32>>,
    cpu_features: Option<Spanned<String>>,
    cpu_model: Option<Spanned<String>>,
    cpu_vendor: Option<Spanned<String>>,
    mem: Option<Spanned<u64>>,
    timeout: Option<Spanned<f64>>,
    #[serde(default)]
    accept_exit: Vec<i32>,
    #[serde(default)]
    accept_timeout: bool,
    inputs_missing: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Spanned<String>,
    #[serde(rename = "break")]
    brk: Option<Spanned<String>>,
    watch: Option<Spanned<String>>,
    console_match: Option<Spanned<String>>,
    console_never: Option<Spanned<String>>,
    results: Option<Spanned<ResultsFormat>>,
    exit_status: Option<Spanned<i64>>,
    vcpu: Option<Spanned<u32>>,
    hits: Option<Spanned<u64>>,
    hits_per_line: Option<Spanned<String>>,
    min: Option<Spanned<u64>>,
    max: Option<Spanned<u64>>,
    never: Option<Spanned<bool>>,
    on_hit: Option<Spanned<OnHit>>,
    #[serde(rename = "if")]
    condition: Option<Spanned<String>>,
    capture: Option<Spanned<u16>>,
    stack_contains: Option<Spanned<String>>,
    engine: Option<Spanned<EngineName>>,
    values_in: Option<Spanned<[u64; 2]>>,
    never_value: Option<Spanned<u64>>,
    last_value: Option<Spanned<u64>>,
}

/// 1-based line and column of byte `offset` in `text` (an offset past the end, or inside a
/// character, counts as the character's start).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Reads and parses the spec at `path`.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let text = read_bounded(path).map_err(|message| SpecError {
        file: path.to_owned(),
        at: None,
        message,
    })?;
    parse(path, &text, &|p| p.is_file())
}

/// A spec file's text: a regular file (a FIFO or a device is refused before it is opened, so
/// nothing waits for a writer) of at most [`SPEC_FILE_MAX`] bytes.
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let md = std::fs::metadata(path).map_err(|e| format!("cannot read the spec: {e}"))?;
    if !md.is_file() {
        return Err("the spec is not a regular file; give a TOML file".into());
    }
    let too_big = |n: u64| {
        format!("the spec has {n} bytes or more, over the {SPEC_FILE_MAX} a spec file may have")
    };
    if md.len() > SPEC_FILE_MAX {
        return Err(too_big(md.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the spec: {e}"))?;
    let mut bytes = Vec::new();
    file.take(SPEC_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    if bytes.len() as u64 > SPEC_FILE_MAX {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| "the spec is not UTF-8 text".into())
}

/// Parses `text`, the spec at `path`; `exists` says whether an input file is there.
pub fn parse(path: &Path, text: &str, exists: &dyn Fn(&Path) -> bool) -> Result<Spec, SpecError> {
    let err = |span: Option<Range<usize>>, message: String| SpecError {
        file: path.to_owned(),
        at: span.map(|s| line_col(text, s.start)),
        message: shortened(message),
    };
    let raw: RawSpec = toml::from_str(text).map_err(|e| toml_error(text, &e, &err))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let vm = raw.vm.map(Spanned::into_inner).unwrap_or_default();
    let skip_missing = match &vm.inputs_missing {
        None => false,
        Some(m) if m.get_ref() == "skip" => true,
        Some(m) if m.get_ref() == "error" => false,
        Some(m) => {
            return Err(err(
                Some(m.span()),
                "`inputs_missing` is \"error\" (the default) or \"skip\"".into(),
            ))
        }
    };
    let missing = std::cell::RefCell::new(None::<String>);
    let resolve = |p: &Option<Spanned<String>>, what: &str| -> Result<Option<PathBuf>, SpecError> {
        let Some(p) = p else { return Ok(None) };
        let full = folder.join(p.get_ref());
        if !exists(&full) {
            let why = format!("{what} {} is not a file", full.display());
            if skip_missing {
                missing.borrow_mut().get_or_insert(why);
                return Ok(Some(full));
            }
            return Err(err(Some(p.span()), why));
        }
        Ok(Some(full))
    };
    if let (Some(_), Some(s)) = (&vm.kernel, &vm.scenario) {
        return Err(err(
            Some(s.span()),
            "`scenario` picks a scenario of the embedded test guest; with `kernel`, use `cmdline`"
                .into(),
        ));
    }
    let timeout = match &vm.timeout {
        Some(t)
            if !(t.get_ref().is_finite() && *t.get_ref() > 0.0 && *t.get_ref() <= MAX_TIMEOUT) =>
        {
            return Err(err(
                Some(t.span()),
                format!(
                    "`timeout` is a positive number of seconds, at most {MAX_TIMEOUT} (a week)"
                ),
            ))
        }
        Some(t) => *t.get_ref(),
        None => DEFAULT_TIMEOUT,
    };
    if let Some(c) = vm
        .cmdline
        .as_ref()
        .filter(|c| c.get_ref().len() >= CMDLINE_MAX)
    {
        return Err(err(
            Some(c.span()),
            format!(
                "`cmdline` is {} bytes; a kernel command line must be shorter than {CMDLINE_MAX}",
                c.get_ref().len()
            ),
        ));
    }
    if let Some(m) = vm
        .cpu_model
        .as_ref()
        .filter(|m| !CPU_MODELS.contains(&m.get_ref().as_str()))
    {
        return Err(err(
            Some(m.span()),
            format!(
                "`cpu_model` {:?} is not a model drvisor has; use one of {}",
                m.get_ref(),
                CPU_MODELS.join(", ")
            ),
        ));
    }
    if let Some(v) = vm.cpu_vendor.as_ref().filter(|v| {
        let b = v.get_ref().as_bytes();
        b.len() != 12 || !b.iter().all(u8::is_ascii_graphic)
    }) {
        return Err(err(
            Some(v.span()),
            "`cpu_vendor` takes exactly 12 printable ASCII characters, e.g. \"GenuineIntel\""
                .into(),
        ));
    }
    let vm_spec = VmSpec {
        kernel: resolve(&vm.kernel, "kernel")?,
        initrd: resolve(&vm.initrd, "initrd")?,
        symbols: resolve(&vm.symbols, "symbols")?,
        cmdline: vm.cmdline.map(Spanned::into_inner).unwrap_or_default(),
        scenario: vm.scenario.map(Spanned::into_inner),
        vcpus: vm.vcpus.map_or(1, Spanned::into_inner),
        cpu_features: vm.cpu_features.map(Spanned::into_inner),
        cpu_model: vm.cpu_model.map(Spanned::into_inner),
        cpu_vendor: vm.cpu_vendor.map(Spanned::into_inner),
        mem: vm.mem.map_or(64, Spanned::into_inner),
        timeout,
        accept_exit: vm.accept_exit,
        accept_timeout: vm.accept_timeout,
        not_run: None,
        drop_unoffered_features: false,
        dropped_features: Vec::new(),
    };
    let vm_spec = VmSpec {
        not_run: missing.into_inner(),
        ..vm_spec
    };
    let mut checks: Vec<Check> = Vec::new();
    for c in raw.check {
        let span = c.span();
        let check = check(c.into_inner(), span.clone(), &err)?;
        if checks.iter().any(|o| o.name == check.name) {
            return Err(err(
                Some(span),
                format!("a second check named `{}`", check.name),
            ));
        }
        // Checks on one location share one breakpoint, and its hit events do not say which
        // condition held: they need the same `if`.
        if let Some((h, other)) = check.kind.hits().and_then(|h| {
            checks
                .iter()
                .find(|o| o.kind.same_location(&check.kind))
                .and_then(|o| o.kind.hits().map(|oh| (h, (o, oh))))
        }) {
            let (o, oh) = other;
            if oh.condition != h.condition {
                return Err(err(
                    Some(span),
                    format!(
                        "check `{}` is on `{}` like check `{}`, with another `if`: checks on one location share one breakpoint, so give them the same `if` (or none)",
                        check.name, h.target, o.name
                    ),
                ));
            }
        }
        checks.push(Check {
            line: line_col(text, span.start).0,
            ..check
        });
    }
    if checks.is_empty() {
        // At the end, where one would go.
        return Err(err(
            Some(text.len()..text.len()),
            "no [[check]]: a spec needs at least one".into(),
        ));
    }
    let name = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    Ok(Spec {
        path: path.to_owned(),
        name,
        vm: vm_spec,
        checks,
    })
}

/// The most characters of an error message: a message that quotes a long value (the TOML
/// library quotes a string of the wrong type whole) keeps its start and its end.
pub const MESSAGE_MAX: usize = 300;

/// `message`, its middle cut out past [`MESSAGE_MAX`] characters, with a note of how much.
fn shortened(message: String) -> String {
    let n = message.chars().count();
    if n <= MESSAGE_MAX {
        return message;
    }
    let keep = MESSAGE_MAX / 2;
    let head: String = message.chars().take(keep).collect();
    let tail: String = message.chars().skip(n - keep).collect();
    format!("{head}... ({} characters left out) ...{tail}", n - 2 * keep)
}

type ErrFn<'a> = dyn Fn(Option<Range<usize>>, String) -> SpecError + 'a;

/// A TOML error at its place. The TOML library gives a few errors no place (a dotted key or
/// table header nested past its recursion limit): their line is found as the first whole-line
/// prefix of the text that fails the same way.
fn toml_error(text: &str, e: &toml::de::Error, err: &ErrFn<'_>) -> SpecError {
    let message = match e.message() {
        "recursion limit" => {
            "nested too deep (TOML's recursion limit): use fewer dotted keys or nested tables"
                .to_owned()
        }
        m => m.to_owned(),
    };
    let span = e.span().unwrap_or_else(|| {
        let at = unplaced_error_line(text, e.message());
        at..at
    });
    err(Some(span), message)
}

/// The byte offset of the start of the first line whose text up to its end fails to parse with
/// `message` and no place (the start of the text when no prefix does).
fn unplaced_error_line(text: &str, message: &str) -> usize {
    let ends: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(text.len()))
        .collect();
    let fails = |end: usize| {
        toml::from_str::<toml::Table>(&text[..end])
            .is_err_and(|e| e.span().is_none() && e.message() == message)
    };
    // Bisection: the first prefix that fails so (a longer one fails the same way).
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(ends[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    match lo {
        0 => 0,
        n if n < ends.len() => ends[n - 1],
        _ => 0,
    }
}

/// One raw check into a validated one.
fn check(c: RawCheck, span: Range<usize>, err: &ErrFn<'_>) -> Result<Check, SpecError> {
    let name = c.name.get_ref().clone();
    if name.trim().is_empty() {
        return Err(err(
            Some(c.name.span()),
            "a check's `name` is not empty".into(),
        ));
    }
    let kinds = [
        c.brk.as_ref().map(|_| "break"),
        c.watch.as_ref().map(|_| "watch"),
        c.console_match.as_ref().map(|_| "console_match"),
        c.console_never.as_ref().map(|_| "console_never"),
        c.results.as_ref().map(|_| "results"),
        c.exit_status.as_ref().map(|_| "exit_status"),
    ];
    let given: Vec<&str> = kinds.iter().flatten().copied().collect();
    if given.len() != 1 {
        return Err(err(
            Some(span),
            format!(
                "check `{name}` needs exactly one of break, watch, console_match, console_never, \
                 results, exit_status (it has {})",
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                }
            ),
        ));
    }
    let is_hit = c.brk.is_some() || c.watch.is_some();
    // Keys that only mean something for some kinds: refuse them elsewhere, at their place.
    let hit_keys = [
        ("vcpu", c.vcpu.as_ref().map(Spanned::span)),
        ("hits", c.hits.as_ref().map(Spanned::span)),
        ("hits_per_line", c.hits_per_line.as_ref().map(Spanned::span)),
        ("min", c.min.as_ref().map(Spanned::span)),
        ("max", c.max.as_ref().map(Spanned::span)),
        ("never", c.never.as_ref().map(Spanned::span)),
        ("on_hit", c.on_hit.as_ref().map(Spanned::span)),
        ("if", c.condition.as_ref().map(Spanned::span)),
        ("capture", c.capture.as_ref().map(Spanned::span)),
        (
            "stack_contains",
            c.stack_contains.as_ref().map(Spanned::span),
        ),
    ];
    let watch_keys = [
        ("engine", c.engine.as_ref().map(Spanned::span)),
        ("values_in", c.values_in.as_ref().map(Spanned::span)),
        ("never_value", c.never_value.as_ref().map(Spanned::span)),
        ("last_value", c.last_value.as_ref().map(Spanned::span)),
    ];
    for (key, at) in hit_keys {
        if let (Some(at), false) = (at, is_hit) {
            return Err(err(
                Some(at),
                format!("`{key}` belongs to a break or watch check"),
            ));
        }
    }
    for (key, at) in watch_keys {
        if let (Some(at), None) = (at, &c.watch) {
            return Err(err(Some(at), format!("`{key}` belongs to a watch check")));
        }
    }
    let regex = |s: &Spanned<String>| line_regex(s, err);
    let kind = if let Some(r) = &c.console_match {
        CheckKind::ConsoleMatch(regex(r)?)
    } else if let Some(r) = &c.console_never {
        CheckKind::ConsoleNever(regex(r)?)
    } else if let Some(f) = c.results {
        CheckKind::Results(f.into_inner())
    } else if let Some(s) = c.exit_status {
        CheckKind::ExitStatus(s.into_inner())
    } else {
        let target = c
            .brk
            .as_ref()
            .or(c.watch.as_ref())
            .expect("one kind is given");
        if target.get_ref().trim().is_empty() || target.get_ref().contains(char::is_whitespace) {
            return Err(err(Some(target.span()), "a location is one word".into()));
        }
        let expect = hit_expect(&c, err)?;
        if let Some(n) = &c.capture {
            if !(1..=MAX_CAPTURE).contains(n.get_ref()) {
                return Err(err(
                    Some(n.span()),
                    format!("`capture` is a number of stack bytes, 1 to {MAX_CAPTURE}"),
                ));
            }
        }
        if let Some(f) = &c.stack_contains {
            stack_function(f, &expect, err)?;
        }
        let hits = HitCheck {
            target: target.get_ref().clone(),
            vcpu: c.vcpu.map(Spanned::into_inner),
            expect,
            on_hit: c.on_hit.map(Spanned::into_inner).unwrap_or_default(),
            condition: c.condition.map(Spanned::into_inner),
            capture: c.capture.map(Spanned::into_inner),
            stack_contains: c.stack_contains.map(Spanned::into_inner),
        };
        if c.brk.is_some() {
            CheckKind::Break(hits)
        } else {
            let values = ValueExpect {
                values_in: c
                    .values_in
                    .as_ref()
                    .map(|v| (v.get_ref()[0], v.get_ref()[1])),
                never_value: c.never_value.map(Spanned::into_inner),
                last_value: c.last_value.map(Spanned::into_inner),
            };
            if let Some(v) = &c.values_in {
                if v.get_ref()[0] > v.get_ref()[1] {
                    return Err(err(
                        Some(v.span()),
                        "`values_in = [lo, hi]` needs lo <= hi".into(),
                    ));
                }
            }
            if let Some(e) = &c.engine {
                if *e.get_ref() == EngineName::Hw && values.any() {
                    return Err(err(
                        Some(e.span()),
                        "value constraints need the written values, which only the page engine reports; drop `engine = \"hw\"`".into(),
                    ));
                }
            }
            CheckKind::Watch(WatchCheck {
                hits,
                engine: c.engine.map(Spanned::into_inner),
                values,
            })
        }
    };
    Ok(Check {
        name,
        line: 0,
        kind,
    })
}

/// `stack_contains`: a function's name, on a check that expects hits.
fn stack_function(
    f: &Spanned<String>,
    expect: &HitExpect,
    err: &ErrFn<'_>,
) -> Result<(), SpecError> {
    let name = f.get_ref();
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        return Err(err(
            Some(f.span()),
            "`stack_contains` is a function's name, one word without an offset (as \
             `do_syscall_64`)"
                .into(),
        ));
    }
    if expect.max == Some(0) && expect.per_line.is_none() {
        return Err(err(
            Some(f.span()),
            "`stack_contains` looks at the stacks of hits, and this check expects none; drop \
             one of them"
                .into(),
        ));
    }
    Ok(())
}

/// A console regex, line-wise as people read a console: `^BUG:` matches at the start of any
/// line, and `$` before `\r\n` too (serial consoles end lines so).
fn line_regex(s: &Spanned<String>, err: &ErrFn<'_>) -> Result<Regex, SpecError> {
    RegexBuilder::new(s.get_ref())
        .multi_line(true)
        .crlf(true)
        .build()
        .map_err(|e| {
            let why = e.to_string();
            let last = why.lines().last().unwrap_or_default().trim().to_owned();
            err(Some(s.span()), format!("bad regex: {last}"))
        })
}

/// `hits`, `min`, `max`, `never`: at least one hit when none is given.
fn hit_expect(c: &RawCheck, err: &ErrFn<'_>) -> Result<HitExpect, SpecError> {
    if let Some(p) = &c.hits_per_line {
        let other = [c.hits.as_ref(), c.min.as_ref(), c.max.as_ref()]
            .into_iter()
            .flatten()
            .next();
        if let Some(o) = other
            .map(Spanned::span)
            .or(c.never.as_ref().map(Spanned::span))
        {
            return Err(err(
                Some(o),
                "`hits_per_line` sets the count; drop hits, min, max and never".into(),
            ));
        }
        return Ok(HitExpect {
            min: 0,
            max: None,
            per_line: Some(LinePattern(line_regex(p, err)?)),
        });
    }
    if let Some(h) = &c.hits {
        if let Some(other) = c.min.as_ref().or(c.max.as_ref()) {
            return Err(err(
                Some(other.span()),
                "`hits` is exact; drop `min` and `max`".into(),
            ));
        }
        if let Some(n) = &c.never {
            return Err(err(
                Some(n.span()),
                "`hits` and `never` exclude each other".into(),
            ));
        }
        let n = *h.get_ref();
        return Ok(HitExpect {
            min: n,
            max: Some(n),
            per_line: None,
        });
    }
    if let Some(n) = &c.never {
        if let Some(other) = c.min.as_ref().or(c.max.as_ref()) {
            return Err(err(
                Some(other.span()),
                "`never` excludes `min` and `max`".into(),
            ));
        }
        if !*n.get_ref() {
            return Err(err(
                Some(n.span()),
                "`never = false` means nothing; drop it".into(),
            ));
        }
        return Ok(HitExpect {
            min: 0,
            max: Some(0),
            per_line: None,
        });
    }
    let min = c.min.as_ref().map(|m| *m.get_ref());
    let max = c.max.as_ref().map(|m| *m.get_ref());
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(err(
                c.max.as_ref().map(Spanned::span),
                format!("`max = {hi}` is below `min = {lo}`"),
            ));
        }
    }
    Ok(HitExpect {
        min: min.unwrap_or(if max.is_some() { 0 } else { 1 }),
        max,
        per_line: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Spec {
        parse(Path::new("/s/x.toml"), text, &|_| true).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new("/s/x.toml"), text, &|_| false)
            .map(|_| ())
            .expect_err("an error")
            .to_string()
    }

    #[test]
    fn a_full_spec_parses() {
        let s = parse_ok(
            r#"
[vm]
scenario = "exec"
cmdline = "count=3"
timeout = 5
[[check]]
name = "t0"
break = "drv_target_0"
hits = 3
[[check]]
name = "w"
watch = "drv_watch_u32:w"
values_in = [1, 3]
last_value = 3
[[check]]
name = "c"
console_never = "panic"
[[check]]
name = "e"
exit_status = 0
"#,
        );
        assert_eq!(s.vm.timeout, 5.0);
        assert_eq!(s.vm.scenario.as_deref(), Some("exec"));
        assert_eq!(s.checks.len(), 4);
        assert_eq!(s.checks[1].line, 10);
        match &s.checks[0].kind {
            CheckKind::Break(h) => assert_eq!(
                h.expect,
                HitExpect {
                    min: 3,
                    max: Some(3),
                    per_line: None,
                }
            ),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn if_is_a_conditions_text_and_one_location_has_one() {
        let s = parse_ok(
            "[[check]]\nname = \"a\"\nbreak = \"f\"\nif = \"rdi == 3\"\nhits = 1\n\
             [[check]]\nname = \"b\"\nbreak = \"f\"\nif = \"rdi == 3\"\nmax = 1\n",
        );
        assert_eq!(
            s.checks[0].kind.hits().and_then(|h| h.condition.as_deref()),
            Some("rdi == 3")
        );
        let e = parse_err(
            "[[check]]\nname = \"a\"\nbreak = \"f\"\nif = \"rdi == 3\"\n\
             [[check]]\nname = \"b\"\nbreak = \"f\"\n",
        );
        assert!(e.contains("give them the same `if`"), "{e}");
        let e = parse_err("[[check]]\nname = \"a\"\nexit_status = 0\nif = \"1\"\n");
        assert!(e.contains("`if` belongs to a break or watch check"), "{e}");
    }

    /// `stack_contains` captures 1024 bytes unless `capture` says how many.
    #[test]
    fn stack_contains_captures_a_default_or_the_given_bytes() {
        let s = parse_ok(
            "[[check]]\nname = \"a\"\nbreak = \"f\"\nstack_contains = \"g\"\n\
             [[check]]\nname = \"b\"\nbreak = \"h\"\nstack_contains = \"g\"\ncapture = 256\n\
             [[check]]\nname = \"c\"\nbreak = \"i\"\non_hit = \"capture\"\n\
             [[check]]\nname = \"d\"\nbreak = \"j\"\n",
        );
        let bytes: Vec<Option<u16>> = s
            .checks
            .iter()
            .map(|c| c.kind.hits().and_then(HitCheck::capture_bytes))
            .collect();
        assert_eq!(bytes, [Some(1024), Some(256), Some(128), None]);
        assert_eq!(
            s.checks[0]
                .kind
                .hits()
                .and_then(|h| h.stack_contains.as_deref()),
            Some("g")
        );
    }

    #[test]
    fn missing_inputs_can_be_a_skip() {
        let text = "[vm]\nkernel = \"k\"\ninputs_missing = \"skip\"\n[[check]]\nname = \"e\"\nexit_status = 0\n";
        let s = parse(Path::new("/s/x.toml"), text, &|_| false).expect("a skip, not an error");
        assert_eq!(s.vm.not_run.as_deref(), Some("kernel /s/k is not a file"));
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_folder() {
        let s = parse_ok("[vm]\nkernel = \"k.elf\"\n[[check]]\nname = \"e\"\nexit_status = 0\n");
        assert_eq!(s.vm.kernel.as_deref(), Some(Path::new("/s/k.elf")));
    }

    /// Each error names its line and column.
    #[test]
    fn errors_have_line_and_column() {
        let long_cmdline = format!(
            "[vm]\ncmdline = \"{}\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
            "x".repeat(CMDLINE_MAX)
        );
        let table = [
            ("[[check]]\nname = \"a\"\nbogus = 1\n", "/s/x.toml:3:1: unknown field `bogus`"),
            ("[[check]]\nname = \"a\"\nexit_status = \"zero\"\n", "/s/x.toml:3:15: invalid type"),
            ("[[check]]\nname = \"a\"\nconsole_match = \"(\"\n", "/s/x.toml:3:17: bad regex"),
            ("[vm]\nkernel = \"nope\"\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:10: kernel /s/nope is not a file"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\nhits = 1\nmin = 2\n", "/s/x.toml:5:7: `hits` is exact"),
            ("[[check]]\nname = \"a\"\nexit_status = 0\nvcpu = 1\n", "/s/x.toml:4:8: `vcpu` belongs"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\nwatch = \"g\"\n", "/s/x.toml:1:1: check `a` needs exactly one"),
            ("[[check]]\nname = \"a\"\nwatch = \"g\"\nengine = \"hw\"\nlast_value = 1\n", "/s/x.toml:4:10: value constraints"),
            ("[[check]]\nname = \"a\"\nexit_status = 0\n[[check]]\nname = \"a\"\nexit_status = 1\n", "/s/x.toml:4:1: a second check"),
            ("[vm]\ntimeout = 0\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:11: `timeout`"),
            ("[vm]\ntimeout = 1e300\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:11: `timeout` is a positive number of seconds, at most"),
            ("[vm]\ntimeout = 18446744073709551616.0\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:11: `timeout`"),
            ("[vm]\ntimeout = -1\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:11: `timeout`"),
            ("[vm]\ntimeout = nan\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:11: `timeout`"),
            ("[vm]\ntimeout = inf\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:11: `timeout`"),
            ("[[check]]\nname = \"a\"\nresults = \"junit\"\n", "/s/x.toml:3:11: unknown variant"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\nhits_per_line = \"x\"\nhits = 1\n", "/s/x.toml:5:8: `hits_per_line` sets the count"),
            (&long_cmdline, "/s/x.toml:2:11: `cmdline` is 4096 bytes; a kernel command line must be shorter than 4096"),
            ("[vm]\ninputs_missing = \"maybe\"\n[[check]]\nname = \"a\"\nexit_status = 0\n", "/s/x.toml:2:18: `inputs_missing`"),
            ("[[check]]\nname = \"a\"\nexit_status = 0\nstack_contains = \"f\"\n", "/s/x.toml:4:18: `stack_contains` belongs to a break or watch check"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\nstack_contains = \"g+0x10\"\n", "/s/x.toml:4:18: `stack_contains` is a function's name"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\nnever = true\nstack_contains = \"g\"\n", "/s/x.toml:5:18: `stack_contains` looks at the stacks of hits"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\ncapture = 0\n", "/s/x.toml:4:11: `capture` is a number of stack bytes, 1 to 4096"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\ncapture = 5000\n", "/s/x.toml:4:11: `capture` is a number of stack bytes, 1 to 4096"),
            ("[[check]]\nname = \"a\"\nbreak = \"f\"\nstack_contain = \"g\"\n", "/s/x.toml:4:1: unknown field `stack_contain`"),
        ];
        for (text, want) in table {
            let got = parse_err(text);
            assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn devices_fifos_and_big_files_are_not_read_as_specs() {
        let e = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = std::env::temp_dir().join(format!("drvisor-ci-spec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; SPEC_FILE_MAX as usize + 1]).unwrap();
        let e = load(&big).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.contains("over the"), "{e}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        // Inside a character, and past the end.
        assert_eq!(line_col("aé", 2), (1, 2));
        assert_eq!(line_col("ab\n", 99), (2, 1));
    }

    /// A string of the wrong type is not quoted whole, and the message keeps what was expected.
    #[test]
    fn a_long_value_is_not_quoted_whole() {
        let text = format!(
            "[vm]\nvcpus = \"{}\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
            "x".repeat(100_000)
        );
        let e = parse_err(&text);
        assert!(e.starts_with("/s/x.toml:2:9: "), "{e:.400}");
        assert!(e.len() < 500, "{} bytes: {e:.400}", e.len());
        assert!(e.contains("characters left out"), "{e}");
        assert!(e.contains("u32"), "{e}");
    }

    #[test]
    fn cpu_model_is_one_drvisor_has() {
        let e = parse_err(
            "[vm]\nscenario = \"exec\"\ncpu_model = \"Skylake\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
        );
        assert!(
            e.starts_with("/s/x.toml:3:13: `cpu_model` \"Skylake\""),
            "{e}"
        );
        assert!(e.contains("host, qemu64"), "{e}");
        let e = parse_err(
            "[vm]\nscenario = \"exec\"\ncpu_vendor = \"Intel\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
        );
        assert!(
            e.starts_with("/s/x.toml:3:14: `cpu_vendor` takes exactly 12"),
            "{e}"
        );
    }

    #[test]
    fn a_spec_without_checks_is_an_error_at_its_end() {
        let e = parse_err("[vm]\nscenario = \"exec\"\n");
        assert!(e.starts_with("/s/x.toml:3:1: no [[check]]"), "{e}");
        let e = parse_err("");
        assert!(e.starts_with("/s/x.toml:1:1: no [[check]]"), "{e}");
    }

    /// The TOML library gives too deep a dotted header no place; the spec error has its line.
    #[test]
    fn too_deep_a_table_header_is_an_error_at_its_line() {
        let deep = vec!["t"; 200].join(".");
        let text = format!("[[check]]\nname = \"a\"\nexit_status = 0\n[{deep}]\nx = 1\n");
        let e = parse_err(&text);
        assert!(e.starts_with("/s/x.toml:4:1: nested too deep"), "{e}");
        let text = format!("# one\n{deep} = 1\n");
        let e = parse_err(&text);
        assert!(e.starts_with("/s/x.toml:2:1: nested too deep"), "{e}");
    }
}
