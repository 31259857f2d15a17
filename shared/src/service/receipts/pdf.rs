//! The receipt as a PDF proof document a buyer can hand to an accountant.
//!
//! Written with `pdf-writer` using only the standard 14 fonts (Helvetica, Courier), so nothing
//! is embedded and the text stays extractable. Those fonts cover WinAnsi (Latin-1 plus a few
//! typographic signs) only: other text is transliterated (Cyrillic, Greek) or shown as `?`.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::{clock::rfc3339, storage::receipts::ReceiptRow};

pub(super) struct ReceiptDocument<'a> {
    pub receipt: &'a ReceiptRow,
    pub merchant_name: &'a str,
    pub product_name: &'a str,
    pub verification_url: &'a str,
    pub keys_url: &'a str,
    pub verified: bool,
}

const PAGE_W: f32 = 595.0; // A4
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 50.0;
const VALUE_X: f32 = 180.0;
const HELVETICA: Name<'static> = Name(b"F1");
const HELVETICA_BOLD: Name<'static> = Name(b"F2");
const COURIER: Name<'static> = Name(b"F3");

/// Lines of text laid out top to bottom, over as many pages as they need.
struct Layout {
    pages: Vec<Content>,
    page: Content,
    y: f32,
}

impl Layout {
    fn new() -> Self {
        Self { pages: Vec::new(), page: Content::new(), y: PAGE_H - MARGIN }
    }

    fn space(&mut self, height: f32) {
        self.y -= height;
        if self.y < MARGIN + 20.0 {
            let full = std::mem::replace(&mut self.page, Content::new());
            self.pages.push(full);
            self.y = PAGE_H - MARGIN;
        }
    }

    fn text(&mut self, font: Name<'_>, size: f32, x: f32, text: &str) {
        let bytes = win_ansi(text);
        self.page.begin_text().set_font(font, size).next_line(x, self.y).show(Str(&bytes)).end_text();
    }

    fn heading(&mut self, text: &str) {
        self.space(26.0);
        self.text(HELVETICA_BOLD, 12.0, MARGIN, text);
        self.page.set_line_width(0.5).move_to(MARGIN, self.y - 4.0).line_to(PAGE_W - MARGIN, self.y - 4.0).stroke();
        self.space(6.0);
    }

    /// A label and its value; long values wrap under themselves.
    fn row(&mut self, label: &str, value: &str, mono: bool) {
        let (font, size, per_line) = if mono { (COURIER, 8.5, 72) } else { (HELVETICA, 10.0, 68) };
        let lines = wrap(value, per_line);
        for (i, line) in lines.iter().enumerate() {
            self.space(14.0);
            if i == 0 {
                self.text(HELVETICA_BOLD, 9.5, MARGIN, label);
            }
            self.text(font, size, VALUE_X, line);
        }
    }

    /// A paragraph over the full width.
    fn paragraph(&mut self, font: Name<'_>, size: f32, text: &str, per_line: usize) {
        for line in wrap(text, per_line) {
            self.space(size + 4.0);
            self.text(font, size, MARGIN, &line);
        }
    }

    fn finish(mut self) -> Vec<Content> {
        self.pages.push(self.page);
        self.pages
    }
}

pub(super) fn render(doc: &ReceiptDocument<'_>) -> Vec<u8> {
    let r = doc.receipt;
    let mut layout = Layout::new();

    // Header, with the QR code of the verification URL at the top right.
    layout.space(10.0);
    layout.text(HELVETICA_BOLD, 20.0, MARGIN, "Payment receipt");
    layout.space(22.0);
    layout.text(HELVETICA, 12.0, MARGIN, doc.merchant_name);
    layout.space(16.0);
    layout.text(HELVETICA, 9.0, MARGIN, &format!("Receipt {}", r.id));
    draw_qr(&mut layout.page, doc.verification_url, PAGE_W - MARGIN - 100.0, PAGE_H - MARGIN - 100.0, 100.0);
    layout.space(40.0);

    layout.heading("Purchase");
    layout.row("Receipt ID", &r.id, true);
    layout.row("Date", &human_date(r.issued_at), false);
    layout.row("Merchant", doc.merchant_name, false);
    layout.row("Product", doc.product_name, false);
    layout.row("Amount", &format!("{} {}", r.amount, r.currency), false);
    layout.row("Wallet", r.wallet.as_deref().unwrap_or("-"), true);
    layout.row("Transaction signature", &r.tx_signature, true);
    layout.row("Payment ID", &r.payment_id, true);

    let invoice = [
        ("Invoice number", &r.invoice_number),
        ("Billing name", &r.billing_name),
        ("Billing email", &r.billing_email),
        ("Billing reference", &r.billing_reference),
        ("Notes", &r.invoice_notes),
    ];
    if invoice.iter().any(|(_, v)| v.is_some()) {
        layout.heading("Invoice details");
        for (label, value) in invoice {
            if let Some(value) = value {
                layout.row(label, value, false);
            }
        }
    }

    layout.heading("Proof");
    layout.row("Algorithm", "Ed25519 over the RFC 8785 canonical JSON payload", false);
    layout.row("Key ID", r.key_id.as_deref().unwrap_or("(unsigned)"), true);
    layout.row("Fingerprint (SHA-256)", &r.payload_sha256, true);
    layout.row("Signature", r.signature.as_deref().unwrap_or("(unsigned)"), true);
    let state = if doc.verified { "valid when this document was generated" } else { "NOT VALID when this document was generated" };
    layout.row("Verification", state, false);

    layout.heading("Verify this receipt");
    layout.paragraph(HELVETICA, 9.5, "Open this address, or scan the QR code, to check the receipt against Hilt's records:", 100);
    layout.paragraph(COURIER, 8.5, doc.verification_url, 100);
    layout.space(6.0);
    layout.paragraph(
        HELVETICA,
        8.5,
        &format!(
            "Offline check: the signature is Ed25519 over the RFC 8785 canonical JSON of the receipt payload; \
             the public key is published by key ID at {}.",
            doc.keys_url
        ),
        110,
    );

    write(&r.id, layout.finish())
}

fn write(receipt_id: &str, pages: Vec<Content>) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let info = Ref::new(3);
    let fonts = [(HELVETICA, Ref::new(4), "Helvetica"), (HELVETICA_BOLD, Ref::new(5), "Helvetica-Bold"), (COURIER, Ref::new(6), "Courier")];
    let first_page = 7;
    let page_ids: Vec<Ref> = (0..pages.len()).map(|i| Ref::new(first_page + 2 * i as i32)).collect();

    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(pages.len() as i32);
    pdf.document_info(info).title(TextStr(&format!("Receipt {receipt_id}"))).producer(TextStr("Hilt"));
    for (name, id, base) in fonts {
        let _ = name;
        pdf.type1_font(id).base_font(Name(base.as_bytes())).encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    for (page_id, content) in page_ids.iter().zip(pages) {
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H)).parent(tree).contents(content_id);
        let mut resources = page.resources();
        let mut font_map = resources.fonts();
        for (name, id, _) in fonts {
            font_map.pair(name, id);
        }
        font_map.finish();
        resources.finish();
        page.finish();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}

/// The QR code as filled squares, `size` points wide, lower left corner at (x, y).
fn draw_qr(content: &mut Content, text: &str, x: f32, y: f32, size: f32) {
    let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else { return };
    let width = code.width();
    let quiet = 2;
    let module = size / (width + 2 * quiet) as f32;
    content.save_state().set_fill_gray(0.0);
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (col, row) = (i % width, i / width);
            let mx = x + (col + quiet) as f32 * module;
            let my = y + size - (row + quiet + 1) as f32 * module;
            content.rect(mx, my, module, module);
        }
    }
    content.fill_nonzero().restore_state();
}

fn human_date(ms: i64) -> String {
    // 2025-01-31T12:00:00.000Z → 2025-01-31 12:00:00 UTC
    let s = rfc3339(ms);
    match (s.get(..10), s.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => s,
    }
}

/// Splits text into lines of at most `per_line` characters, at spaces when it can.
fn wrap(text: &str, per_line: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            let mut word: Vec<char> = word.chars().collect();
            // A word longer than a line (ids, URLs, signatures) is cut where it must be.
            while word.len() > per_line {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                lines.push(word.drain(..per_line).collect());
            }
            let word: String = word.into_iter().collect();
            let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
            if needed > per_line && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines
}

/// Encodes text for the standard fonts (WinAnsiEncoding). Characters outside it are
/// transliterated when there is a usual Latin spelling, else replaced by `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let code = c as u32;
        match c {
            ' '..='~' => out.push(code as u8),
            '\u{a0}'..='\u{ff}' => out.push(code as u8),
            '\t' => out.push(b' '),
            c if c.is_control() => {}
            _ => match win_ansi_extra(c) {
                Some(b) => out.push(b),
                None => match transliterate(c) {
                    Some(latin) => out.extend_from_slice(latin.as_bytes()),
                    None => out.push(b'?'),
                },
            },
        }
    }
    out
}

/// The WinAnsi characters in 0x80–0x9F (where it differs from Latin-1).
fn win_ansi_extra(c: char) -> Option<u8> {
    Some(match c {
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => 0x85,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8A,
        '‹' => 0x8B,
        'Œ' => 0x8C,
        'Ž' => 0x8E,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9A,
        '›' => 0x9B,
        'œ' => 0x9C,
        'ž' => 0x9E,
        'Ÿ' => 0x9F,
        _ => return None,
    })
}

fn transliterate(c: char) -> Option<&'static str> {
    let lower = c.to_lowercase().next().unwrap_or(c);
    let latin = match lower {
        'а' => "a", 'б' => "b", 'в' => "v", 'г' => "g", 'д' => "d", 'е' => "e", 'ё' => "e",
        'ж' => "zh", 'з' => "z", 'и' => "i", 'й' => "y", 'к' => "k", 'л' => "l", 'м' => "m",
        'н' => "n", 'о' => "o", 'п' => "p", 'р' => "r", 'с' => "s", 'т' => "t", 'у' => "u",
        'ф' => "f", 'х' => "kh", 'ц' => "ts", 'ч' => "ch", 'ш' => "sh", 'щ' => "shch",
        'ъ' => "", 'ы' => "y", 'ь' => "", 'э' => "e", 'ю' => "yu", 'я' => "ya", 'і' => "i",
        'ї' => "yi", 'є' => "ye", 'ґ' => "g", 'ў' => "u",
        'α' => "a", 'β' => "b", 'γ' => "g", 'δ' => "d", 'ε' => "e", 'ζ' => "z", 'η' => "i",
        'θ' => "th", 'ι' => "i", 'κ' => "k", 'λ' => "l", 'μ' => "m", 'ν' => "n", 'ξ' => "x",
        'ο' => "o", 'π' => "p", 'ρ' => "r", 'σ' | 'ς' => "s", 'τ' => "t", 'υ' => "y",
        'φ' => "f", 'χ' => "ch", 'ψ' => "ps", 'ω' => "o",
        _ => return None,
    };
    if lower != c {
        // Upper case: capitalise the first letter (one-letter tables suffice for receipts).
        return Some(match latin {
            "a" => "A", "b" => "B", "v" => "V", "g" => "G", "d" => "D", "e" => "E", "zh" => "Zh",
            "z" => "Z", "i" => "I", "y" => "Y", "k" => "K", "l" => "L", "m" => "M", "n" => "N",
            "o" => "O", "p" => "P", "r" => "R", "s" => "S", "t" => "T", "u" => "U", "f" => "F",
            "kh" => "Kh", "ts" => "Ts", "ch" => "Ch", "sh" => "Sh", "shch" => "Shch", "yu" => "Yu",
            "ya" => "Ya", "yi" => "Yi", "ye" => "Ye", "th" => "Th", "x" => "X", "ps" => "Ps",
            other => other,
        });
    }
    Some(latin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_outside_win_ansi_is_transliterated_or_replaced() {
        assert_eq!(win_ansi("Café €5"), b"Caf\xe9 \x805".to_vec());
        assert_eq!(win_ansi("Подписка VIP"), b"Podpiska VIP".to_vec());
        assert_eq!(win_ansi("Щука"), b"Shchuka".to_vec());
        assert_eq!(win_ansi("🦀 crab 中"), b"? crab ?".to_vec());
        assert_eq!(win_ansi("a\u{0}b\u{7}"), b"ab".to_vec());
    }

    #[test]
    fn wrapping_keeps_words_and_cuts_only_long_tokens() {
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a\nb", 10), vec!["a", "b"]);
    }
}
