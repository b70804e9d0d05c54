// Building the page without ever parsing data as HTML: every value goes in as text.

/** An element: el("td", {className: "x", dataset: {k: "v"}, title: "t"}, "text", child, ...). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "className") node.className = value;
    else if (key === "on") for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else if (key.startsWith("aria-") || key === "role" || key === "scope" || key === "colspan") node.setAttribute(key, String(value));
    else node[key] = value; // properties only (type, title, disabled, hidden): never innerHTML
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Set a node's text only when it changed (keeps the page still while it updates). */
export function setText(node, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function setClass(node, name) {
  if (node.className !== name) node.className = name;
}

/** "12:03:04" for a Unix time in seconds ("" for none). */
export function clock(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

/** "2026-12-01 12:03:04" for a Unix time in seconds. */
export function stamp(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "5 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function ago(seconds, now = Date.now() / 1000) {
  if (!seconds) return "";
  const s = Math.max(0, Math.round(now - seconds));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** "0.8 ms", "12 ms", "1.25 s" for a duration in seconds ("" for none). */
export function duration(seconds) {
  if (seconds === undefined || seconds === null) return "";
  if (seconds < 0.01) return `${(seconds * 1000).toFixed(1)} ms`;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  return `${seconds.toFixed(2)} s`;
}
