//! The playground's UI: a Leptos app that shows what the worker reports and sends it what the
//! user does. It never computes anything heavy; the worker (`src/bin/worker.rs`) owns the engine.

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(lithe_app::components::app::App);
}
