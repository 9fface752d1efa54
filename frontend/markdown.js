// Answers rendered as Markdown, safely: HTML the model writes is shown as text, never
// parsed (marked's `html` renderer escapes it), images become their alt text (no request
// to an address the model chose), and DOMPurify cleans what is left (javascript: links,
// anything a future marked version might let through). marked and DOMPurify are the
// vendored files in vendor/ (`make vendor-frontend`), loaded before this module.

const { marked, DOMPurify } = window;

const escapes = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (ch) => escapes[ch]);

const markdown = new marked.Marked({
  gfm: true,
  renderer: {
    html: ({ text }) => escapeHtml(text),
    image: ({ text, href }) => escapeHtml(text || href),
  },
});

/** Markdown → sanitized HTML, for an element's innerHTML. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(markdown.parse(text), { USE_PROFILES: { html: true } });
}
