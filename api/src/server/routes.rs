//! The router and the handlers of the JSON endpoints. Each handler calls its [`Control`]
//! method on tokio's blocking pool: the methods may block until every vCPU has the change.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::sync::watch;

use super::error::bad_request;
use super::events;
use super::extract::{Id, JsonBody, StrictQuery};
use crate::control::Control;
use crate::rest::{
    ApiError, Breakpoint, DebugRegs, ErrorBody, ErrorKind, HostCapabilities, MemoryQuery,
    MemoryRead, NewBreakpoint, NewWatchpoint, StateRequest, VcpuInfo, VcpuRegisters, VmInfo,
    MEMORY_READ_MAX,
};

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The VM.
    pub control: Arc<dyn Control>,
    /// Turns true when the server shuts down (ends event streams).
    pub shutdown: watch::Receiver<bool>,
}

/// The routes, with JSON 404 and 405 fallbacks; no authentication (the TCP listener adds it).
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/vm", get(vm))
        .route("/vm/state", put(set_state))
        .route("/vm/stop", post(stop))
        .route("/host/capabilities", get(capabilities))
        .route("/breakpoints", post(add_breakpoint).get(breakpoints))
        .route(
            "/breakpoints/{id}",
            get(breakpoint).delete(remove_breakpoint),
        )
        .route("/watchpoints", post(add_watchpoint))
        .route("/vcpus", get(vcpus))
        .route("/vcpus/{n}/debugregs", get(debugregs))
        .route("/vcpus/{n}/registers", get(registers))
        .route("/memory", get(memory))
        .route("/events", get(events::events))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "not-found",
        "no such path; see GET /openapi.json",
    )
}

async fn method_not_allowed() -> impl IntoResponse {
    let body = ErrorBody {
        code: "method-not-allowed".into(),
        message: "this path does not take this method; see GET /openapi.json".into(),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body))
}

/// Runs `f` on the blocking pool; a panic in it is a 500.
async fn call<T, F>(st: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Control) -> Result<T, ApiError> + Send + 'static,
{
    let control = st.control.clone();
    tokio::task::spawn_blocking(move || f(&*control))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                ErrorKind::Internal,
                "internal",
                format!("the VMM failed while serving this request: {e}"),
            ))
        })
}

/// The VM's state and shape.
#[utoipa::path(get, path = "/vm", tag = "vm",
    responses((status = 200, description = "The VM", body = VmInfo)))]
pub(crate) async fn vm(State(st): State<AppState>) -> Result<Json<VmInfo>, ApiError> {
    call(&st, |c| Ok(c.vm())).await.map(Json)
}

/// Pauses or resumes every vCPU; returns once they all are.
#[utoipa::path(put, path = "/vm/state", tag = "vm", request_body = StateRequest,
    responses(
        (status = 200, description = "The VM in its new state", body = VmInfo),
        (status = 409, description = "The VM has stopped", body = ErrorBody),
    ))]
pub(crate) async fn set_state(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<StateRequest>,
) -> Result<Json<VmInfo>, ApiError> {
    call(&st, move |c| c.set_state(req.state)).await.map(Json)
}

/// Ends the run.
#[utoipa::path(post, path = "/vm/stop", tag = "vm",
    responses(
        (status = 200, description = "The VM, stopped", body = VmInfo),
        (status = 409, description = "The run had already ended", body = ErrorBody),
    ))]
pub(crate) async fn stop(State(st): State<AppState>) -> Result<Json<VmInfo>, ApiError> {
    call(&st, |c| c.stop()).await.map(Json)
}

/// What the host probe measured.
#[utoipa::path(get, path = "/host/capabilities", tag = "host",
    responses((status = 200, description = "One row per mechanism and CPL", body = HostCapabilities)))]
pub(crate) async fn capabilities(
    State(st): State<AppState>,
) -> Result<Json<HostCapabilities>, ApiError> {
    call(&st, |c| Ok(c.capabilities())).await.map(Json)
}

/// Adds an exec breakpoint.
#[utoipa::path(post, path = "/breakpoints", tag = "breakpoints", request_body = NewBreakpoint,
    responses(
        (status = 201, description = "The new breakpoint", body = Breakpoint),
        (status = 409, description = "The VM has stopped", body = ErrorBody),
        (status = 422, description = "Unknown symbol, bad address, no such vCPU, no slot, or a mechanism this host lacks", body = ErrorBody),
    ))]
pub(crate) async fn add_breakpoint(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<NewBreakpoint>,
) -> Result<(StatusCode, Json<Breakpoint>), ApiError> {
    let bp = call(&st, move |c| c.add_breakpoint(req)).await?;
    Ok((StatusCode::CREATED, Json(bp)))
}

/// Adds a data watch.
#[utoipa::path(post, path = "/watchpoints", tag = "breakpoints", request_body = NewWatchpoint,
    responses(
        (status = 201, description = "The new watch (listed and removed under /breakpoints)", body = Breakpoint),
        (status = 409, description = "The VM has stopped", body = ErrorBody),
        (status = 422, description = "Unknown symbol, bad length or alignment, no such vCPU, no slot, or an engine this host lacks", body = ErrorBody),
    ))]
pub(crate) async fn add_watchpoint(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<NewWatchpoint>,
) -> Result<(StatusCode, Json<Breakpoint>), ApiError> {
    let bp = call(&st, move |c| c.add_watchpoint(req)).await?;
    Ok((StatusCode::CREATED, Json(bp)))
}

/// Every breakpoint and watch, whoever asked for it.
#[utoipa::path(get, path = "/breakpoints", tag = "breakpoints",
    responses((status = 200, description = "Every breakpoint and watch", body = Vec<Breakpoint>)))]
pub(crate) async fn breakpoints(
    State(st): State<AppState>,
) -> Result<Json<Vec<Breakpoint>>, ApiError> {
    call(&st, |c| Ok(c.breakpoints())).await.map(Json)
}

/// One breakpoint or watch.
#[utoipa::path(get, path = "/breakpoints/{id}", tag = "breakpoints",
    params(("id" = u32, Path, description = "The breakpoint's id")),
    responses(
        (status = 200, description = "The breakpoint", body = Breakpoint),
        (status = 404, description = "No such breakpoint", body = ErrorBody),
    ))]
pub(crate) async fn breakpoint(
    State(st): State<AppState>,
    Id(id): Id,
) -> Result<Json<Breakpoint>, ApiError> {
    call(&st, move |c| c.breakpoint(id)).await.map(Json)
}

/// Removes a breakpoint or watch; returns once no vCPU can report it.
#[utoipa::path(delete, path = "/breakpoints/{id}", tag = "breakpoints",
    params(("id" = u32, Path, description = "The breakpoint's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such breakpoint", body = ErrorBody),
        (status = 422, description = "The engine could not remove it", body = ErrorBody),
    ))]
pub(crate) async fn remove_breakpoint(
    State(st): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    call(&st, move |c| c.remove_breakpoint(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The vCPUs.
#[utoipa::path(get, path = "/vcpus", tag = "vcpus",
    responses((status = 200, description = "One entry per vCPU", body = Vec<VcpuInfo>)))]
pub(crate) async fn vcpus(State(st): State<AppState>) -> Result<Json<Vec<VcpuInfo>>, ApiError> {
    call(&st, |c| Ok(c.vcpus())).await.map(Json)
}

/// One vCPU's debug registers: the guest's, the loaded ones, and the slot map.
#[utoipa::path(get, path = "/vcpus/{n}/debugregs", tag = "vcpus",
    params(("n" = u32, Path, description = "The vCPU index")),
    responses(
        (status = 200, description = "The debug state", body = DebugRegs),
        (status = 404, description = "No such vCPU", body = ErrorBody),
    ))]
pub(crate) async fn debugregs(
    State(st): State<AppState>,
    Id(n): Id,
) -> Result<Json<DebugRegs>, ApiError> {
    call(&st, move |c| c.debugregs(n)).await.map(Json)
}

/// One vCPU's registers (paused VM only).
#[utoipa::path(get, path = "/vcpus/{n}/registers", tag = "vcpus",
    params(("n" = u32, Path, description = "The vCPU index")),
    responses(
        (status = 200, description = "The registers", body = VcpuRegisters),
        (status = 404, description = "No such vCPU", body = ErrorBody),
        (status = 409, description = "The VM is not paused", body = ErrorBody),
    ))]
pub(crate) async fn registers(
    State(st): State<AppState>,
    Id(n): Id,
) -> Result<Json<VcpuRegisters>, ApiError> {
    call(&st, move |c| c.registers(n)).await.map(Json)
}

/// Reads guest memory: exactly one of `gpa` and `gva`, and `len` (1 to 4096); with `gva`,
/// optionally the `vcpu` whose page tables translate it. Both or neither address, `vcpu` with
/// `gpa`, or an unknown parameter, is 400 `bad-query`; a `len` out of range is 422
/// `bad-length`; a `vcpu` the VM does not have is 422 `no-such-vcpu`.
#[utoipa::path(get, path = "/memory", tag = "memory",
    params(
        ("gpa" = Option<String>, Query, description = "A guest-physical address (`0x` hex or decimal)"),
        ("gva" = Option<String>, Query, description = "A guest-virtual address or a symbol, translated through the guest's page tables"),
        ("vcpu" = Option<u32>, Query, description = "With `gva`: the vCPU whose page tables translate it (default 0)"),
        ("len" = u64, Query, description = "Bytes, 1 to 4096"),
    ),
    responses(
        (status = 200, description = "The bytes", body = MemoryRead),
        (status = 400, description = "Both or neither address, or `vcpu` with `gpa`", body = ErrorBody),
        (status = 422, description = "Bad length, no such vCPU, unmapped or unparsable address", body = ErrorBody),
    ))]
pub(crate) async fn memory(
    State(st): State<AppState>,
    StrictQuery(q): StrictQuery<MemoryQuery>,
) -> Result<Json<MemoryRead>, ApiError> {
    if q.gpa.is_some() == q.gva.is_some() {
        return Err(bad_request(
            "bad-query",
            "give exactly one of `gpa` and `gva`",
        ));
    }
    if q.vcpu.is_some() && q.gpa.is_some() {
        return Err(bad_request(
            "bad-query",
            "`vcpu` goes with `gva`: a guest-physical address needs no vCPU's page tables",
        ));
    }
    if q.len == 0 || q.len > MEMORY_READ_MAX {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "bad-length",
            format!("`len` must be 1 to {MEMORY_READ_MAX}, not {}", q.len),
        ));
    }
    call(&st, move |c| c.memory(&q)).await.map(Json)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json")))]
pub(crate) async fn openapi() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(super::openapi::openapi_json).as_str();
    ([(CONTENT_TYPE, "application/json")], doc)
}
