// The conversation and the settings, kept across reloads in localStorage. A browser
// that refuses storage (private mode, a full quota) simply starts empty each time.

const KEY = "textgen.chat.v1";

/** {turns: [{role, content, ...}], settings: {...}}, or an empty conversation. */
export function load() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(KEY) || "null");
    if (saved && Array.isArray(saved.turns) && typeof saved.settings === "object") {
      return saved;
    }
  } catch {
    // unreadable: start again
  }
  return { turns: [], settings: {} };
}

export function save(state) {
  try {
    window.localStorage.setItem(KEY, JSON.stringify(state));
  } catch {
    // storage refused: the conversation lives until the page is closed
  }
}
