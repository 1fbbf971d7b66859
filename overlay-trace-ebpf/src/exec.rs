//! Process starts, for `run --trace`'s timeline: one event per `sched_process_exec` (a stable
//! tracepoint, cheap), attached only when a timeline is asked for.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use overlay_trace_common::{EVENT_EXEC, ExecEvent, STAT_DROPPED_EXEC};

use crate::{
    EVENTS,
    kernel::{count, current_tgid_pid, fill_header, filtered_out, now_ns, submit_flags},
};

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_tgid_pid();
    if filtered_out(tgid) {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(STAT_DROPPED_EXEC);
        return 0;
    };
    // SAFETY: reserved, exclusively owned entry.
    unsafe {
        fill_header(
            &raw mut (*entry.as_mut_ptr()).header,
            EVENT_EXEC,
            now_ns(),
            0,
        )
    };
    entry.submit(submit_flags());
    0
}
