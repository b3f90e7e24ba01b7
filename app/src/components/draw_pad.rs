//! A drawing pad: draw with a mouse, a finger or a pen; the drawing is turned into an
//! MNIST-like 28×28 digit after each stroke segment.

use leptos::prelude::*;
use lithe_app::protocol::SIDE;
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData, PointerEvent};

/// Side of the drawing canvas in canvas pixels (it is scaled by CSS).
const SIZE: u32 = 280;
/// Stroke width in canvas pixels: about two MNIST pixels once scaled.
const LINE: f64 = 22.0;

/// The pad, a preview of what the model sees, and a Clear button.
#[component]
pub fn DrawPad(
    /// Called with the 28×28 digit (0 = background, 255 = ink) after each stroke segment,
    /// and with `None` when the pad is cleared.
    on_digit: Callback<Option<Vec<u8>>>,
) -> impl IntoView {
    let pad = NodeRef::<leptos::html::Canvas>::new();
    let preview = NodeRef::<leptos::html::Canvas>::new();
    // The previous point of the stroke being drawn; `None` when the pen is up.
    let last = StoredValue::new(None::<(f64, f64)>);
    let has_ink = RwSignal::new(false);

    let emit = move || {
        let Some(ctx) = context(&pad.get()) else {
            return;
        };
        let Ok(data) = ctx.get_image_data(0.0, 0.0, SIZE as f64, SIZE as f64) else {
            return;
        };
        let ink: Vec<u8> = data.data().0.chunks_exact(4).map(|px| px[3]).collect();
        let digit = lithe_app::digit::to_mnist(&ink, SIZE as usize, SIZE as usize);
        show_preview(&preview.get(), digit.as_deref());
        on_digit.run(digit);
    };
    let point = move |ev: &PointerEvent| -> Option<(f64, f64)> {
        let rect = pad.get()?.get_bounding_client_rect();
        if rect.width() <= 0.0 || rect.height() <= 0.0 {
            return None;
        }
        let s = SIZE as f64;
        Some((
            (ev.client_x() as f64 - rect.left()) * s / rect.width(),
            (ev.client_y() as f64 - rect.top()) * s / rect.height(),
        ))
    };
    let stroke = move |from: (f64, f64), to: (f64, f64)| {
        if let Some(ctx) = context(&pad.get()) {
            ctx.set_stroke_style_str("#fff");
            ctx.set_line_width(LINE);
            ctx.set_line_cap("round");
            ctx.set_line_join("round");
            ctx.begin_path();
            ctx.move_to(from.0, from.1);
            ctx.line_to(to.0, to.1);
            ctx.stroke();
        }
    };
    let down = move |ev: PointerEvent| {
        if ev.button() != 0 {
            return;
        }
        ev.prevent_default();
        if let Some(c) = pad.get() {
            let _ = c.set_pointer_capture(ev.pointer_id());
        }
        if let Some(p) = point(&ev) {
            // A zero-length segment with round caps draws a dot.
            stroke(p, p);
            last.set_value(Some(p));
            has_ink.set(true);
            emit();
        }
    };
    let moved = move |ev: PointerEvent| {
        let Some(from) = last.get_value() else { return };
        ev.prevent_default();
        if let Some(to) = point(&ev) {
            stroke(from, to);
            last.set_value(Some(to));
            emit();
        }
    };
    let up = move |_: PointerEvent| {
        if last.get_value().is_some() {
            last.set_value(None);
            emit();
        }
    };
    let clear = move |_| {
        if let Some(ctx) = context(&pad.get()) {
            ctx.clear_rect(0.0, 0.0, SIZE as f64, SIZE as f64);
        }
        last.set_value(None);
        has_ink.set(false);
        show_preview(&preview.get(), None);
        on_digit.run(None);
    };

    view! {
        <div class="draw">
            <div class="pad-wrap">
                <canvas node_ref=pad class="pad" width=SIZE height=SIZE
                    role="img" aria-label="Drawing pad: draw a digit with a mouse, a finger or a pen"
                    on:pointerdown=down on:pointermove=moved on:pointerup=up on:pointercancel=up
                    on:contextmenu=|ev| ev.prevent_default()></canvas>
                <p class="pad-hint" class:hidden=move || has_ink.get() aria-hidden="true">"Draw here"</p>
            </div>
            <div class="pad-side">
                <figure class="preview">
                    <canvas node_ref=preview width=SIDE as u32 height=SIDE as u32></canvas>
                    <figcaption>"What the model sees (28×28)"</figcaption>
                </figure>
                <button type="button" on:click=clear disabled=move || !has_ink.get()>"Clear"</button>
            </div>
        </div>
    }
}

/// The 2D context of `canvas`, asking the browser to keep pixels readable cheaply.
fn context(canvas: &Option<HtmlCanvasElement>) -> Option<CanvasRenderingContext2d> {
    let canvas = canvas.as_ref()?;
    let opts = js_sys::Object::new();
    js_sys::Reflect::set(&opts, &"willReadFrequently".into(), &true.into()).ok()?;
    canvas
        .get_context_with_context_options("2d", &opts)
        .ok()??
        .dyn_into()
        .ok()
}

/// Paints the 28×28 digit (or nothing) into the preview canvas.
fn show_preview(canvas: &Option<HtmlCanvasElement>, digit: Option<&[u8]>) {
    let Some(ctx) = context(canvas) else { return };
    let side = SIDE as f64;
    ctx.clear_rect(0.0, 0.0, side, side);
    let Some(digit) = digit else { return };
    let rgba: Vec<u8> = digit.iter().flat_map(|&v| [255, 255, 255, v]).collect();
    if let Ok(img) =
        ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), SIDE as u32, SIDE as u32)
    {
        let _ = ctx.put_image_data(&img, 0.0, 0.0);
    }
}
