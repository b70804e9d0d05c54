// History: the deploys (each new outcome on an access node) and the audit log (who changed which
// object, through the API or an apply), newest first; the first page refreshes, older pages on demand.

import { duration, el, setText, stamp } from "./dom.js";

class Paged {
  constructor(api, path, body, more, row) {
    this.api = api;
    this.path = path;
    this.body = body;
    this.more = more;
    this.row = row; // entry -> <tr>
    this.first = [];
    this.older = [];
    this.next = null;
    this.shownKey = null;
    more.addEventListener("click", () => this.loadOlder().catch(() => {}));
  }

  reset() {
    this.older = [];
  }

  async refresh() {
    const page = await this.api.call("GET", `${this.path}?limit=50`);
    this.first = page.entries;
    if (!this.older.length) this.next = page.next;
    this.render();
  }

  async loadOlder() {
    if (this.next === null) return;
    const page = await this.api.call("GET", `${this.path}?limit=50&before=${this.next}`);
    this.older.push(...page.entries);
    this.next = page.next;
    this.render();
  }

  render() {
    const last = this.first.length ? this.first[this.first.length - 1].seq : Infinity;
    const entries = [...this.first, ...this.older.filter((e) => e.seq < last)];
    const key = entries.map((e) => `${e.seq}:${e.when}`).join(",");
    this.more.hidden = this.next === null;
    if (key === this.shownKey) return;
    this.shownKey = key;
    this.body.replaceChildren(...entries.map(this.row));
    if (!entries.length) this.body.append(el("tr", {}, el("td", { colspan: 7 }, "nothing yet")));
  }
}

function deployRow(e) {
  const result = e.result === "failed" && e.step === "connect" ? "unreachable" : e.result;
  return el("tr", { dataset: { node: e.access_node } },
    el("td", {}, stamp(e.when)),
    el("th", { scope: "row" }, e.access_node),
    el("td", { className: `state ${result}` }, result),
    el("td", { className: "num" }, e.revision),
    el("td", {}, e.by || "unknown"),
    el("td", { className: "num" }, e.seconds ? duration(e.seconds) : ""),
    el("td", { className: "error-text" }, e.error),
  );
}

function auditRow(e) {
  return el("tr", { dataset: { kind: e.kind, name: e.name } },
    el("td", {}, stamp(e.when)),
    el("td", { className: "num" }, e.revision),
    el("th", { scope: "row" }, `${e.kind} ${e.name}`),
    el("td", {}, e.action === "put" ? "created or changed" : "deleted"),
    el("td", {}, e.source === "api" ? "API" : "apply (manifests)"),
    el("td", {}, e.origin),
  );
}

export class HistoryPage {
  constructor(root, context) {
    this.root = root;
    this.message = el("p", { className: "error", role: "alert" });
    root.querySelector("h1").after(this.message);
    this.deploys = new Paged(context.api, "/deploy", root.querySelector("#history-deploys tbody"), root.querySelector("#deploys-more"), deployRow);
    this.audit = new Paged(context.api, "/audit", root.querySelector("#history-audit tbody"), root.querySelector("#audit-more"), auditRow);
  }

  shown() {
    this.deploys.reset();
    this.audit.reset();
  }

  problem(message) {
    setText(this.message, message);
  }

  async refresh() {
    await Promise.all([this.deploys.refresh(), this.audit.refresh()]);
  }
}
