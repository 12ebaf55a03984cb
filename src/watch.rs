//! `"watch": true` (a Wharf extension): an application's module is swapped in when its
//! file changes on disk, the same way a restart swaps it.
//!
//! The files are polled: a `stat` per watched app every [`POLL`] costs nothing worth
//! measuring, works on every file system (network mounts and bind mounts included), and
//! sees a file replaced by rename as well as one written in place. A change is acted on
//! only once the file has stayed the same for [`SETTLE`], so a file still being written
//! is not loaded; one that is loaded but does not compile (a half-written file, say) is
//! logged, the old module keeps serving, and the watch tries again at the next change.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::application::Application;
use crate::controller::Controller;
use crate::runtime::FileStamp;

/// How often watched files are looked at.
pub const POLL: Duration = Duration::from_millis(200);

/// How long a changed file must stay unchanged before it is loaded.
pub const SETTLE: Duration = Duration::from_millis(500);

/// What the watch knows about one app's file.
struct Watched {
    /// The running app this state is about; another app under the same name (the
    /// config changed it) starts afresh. Weak, so the watch never keeps a retired app's
    /// instances alive.
    app: Weak<Application>,
    /// A changed stamp and when it was first seen, until the file settles.
    pending: Option<(FileStamp, Instant)>,
    /// A stamp that was tried and failed; not tried again until the file changes.
    failed: Option<FileStamp>,
}

/// Watches the files of apps with `"watch": true` for as long as the controller lives.
pub async fn run(controller: Weak<Controller>) {
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        let Some(controller) = controller.upgrade() else {
            return;
        };
        let due = due_reloads(&controller, &mut watched);
        for (name, stamp) in due {
            match controller.reload_if_changed(&name).await {
                Ok(true) => tracing::info!(application = %name, "module file changed: swapped in"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(
                        application = %name,
                        "module file changed but was not swapped in; the running module keeps \
                         serving: {e}"
                    );
                    if let Some(state) = watched.get_mut(&name) {
                        state.failed = Some(stamp);
                    }
                }
            }
        }
    }
}

/// Looks at every watched file once; returns the apps whose changed file has settled.
fn due_reloads(
    controller: &Controller,
    watched: &mut HashMap<String, Watched>,
) -> Vec<(String, FileStamp)> {
    let current = controller.current();
    let watching = |name: &str| {
        current
            .running
            .application(name)
            .is_some_and(|app| app.spec().watch)
    };
    watched.retain(|name, _| watching(name));
    let mut due = Vec::new();
    for (name, app) in current.running.applications() {
        if !app.spec().watch {
            continue;
        }
        let state = watched.entry(name.clone()).or_insert_with(|| Watched {
            app: Weak::new(),
            pending: None,
            failed: None,
        });
        if !Weak::ptr_eq(&state.app, &Arc::downgrade(app)) {
            *state = Watched {
                app: Arc::downgrade(app),
                pending: None,
                failed: None,
            };
        }
        // A missing file (mid-replacement, or deleted) is not a change to act on.
        let Some(stamp) = FileStamp::of(app.file()) else {
            continue;
        };
        if Some(stamp) == app.stamp() || Some(stamp) == state.failed {
            state.pending = None;
            continue;
        }
        match state.pending {
            Some((seen, since)) if seen == stamp => {
                if since.elapsed() >= SETTLE {
                    state.pending = None;
                    due.push((name.clone(), stamp));
                }
            }
            _ => state.pending = Some((stamp, Instant::now())),
        }
    }
    due
}
