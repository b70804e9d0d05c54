// Fleet: every access node's state, revision and last push; the master controller and the store.

import { ago, duration, el, setClass, setText, stamp } from "./dom.js";

/** converged / behind / failed / unreachable, from /status's node and the node's last record. */
export function nodeState(node, record) {
  if (node.converged) return "converged";
  if (node.result === "failed") return record && record.step === "connect" ? "unreachable" : "failed";
  return "behind";
}

export class FleetPage {
  constructor(root, context) {
    this.root = root;
    this.api = context.api;
    this.summary = root.querySelector("#fleet-summary");
    this.body = root.querySelector("#fleet-nodes tbody");
    this.rows = new Map();
  }

  shown() {}

  problem(message) {
    setText(this.summary, message);
  }

  async refresh() {
    const [status, deploys] = await Promise.all([
      this.api.call("GET", "/status"),
      this.api.call("GET", "/deploy?latest=true"),
    ]);
    const records = new Map(deploys.entries.map((e) => [e.access_node, e]));
    this.renderSummary(status);
    this.renderNodes(status, records);
  }

  renderSummary(s) {
    const store = s.etcd_health || {};
    const items = [
      ["Master controller", s.master_node || "none (no master elected)"],
      ["This controller", s.this_node ? s.this_node.host_name : ""],
      ["Store", `${store.store || ""} ${store.healthy ? "healthy" : "NOT healthy"}: ${store.detail || ""}`],
      ["Store revision", s.revision],
      ["Access nodes converged", `${s.access_nodes.converged} of ${s.access_nodes.total}` + (s.access_nodes.failed ? `, ${s.access_nodes.failed} failed` : "")],
      ["Backends up", `${s.backends.up} of ${s.backends.total}` + (s.backends.down ? `, ${s.backends.down} down` : "")],
      ["Upstreams in panic", s.panic.length ? s.panic.join(", ") : "none"],
      ["Upstreams refused by the renderer", (s.refused_upstreams || []).join(", ") || "none"],
    ];
    if (this.summary.children.length !== items.length * 2) {
      this.summary.replaceChildren(...items.flatMap(([term]) => [el("dt", {}, term), el("dd", { dataset: { term } })]));
    }
    items.forEach(([term, value], i) => {
      const dd = this.summary.children[i * 2 + 1];
      setText(dd, value);
      const bad = (term === "Store" && !store.healthy) || (term === "Upstreams in panic" && s.panic.length > 0) ||
        (term === "Upstreams refused by the renderer" && (s.refused_upstreams || []).length > 0);
      setClass(dd, bad ? "bad" : "");
    });
  }

  renderNodes(status, records) {
    const names = status.nodes.map((n) => n.name);
    if (names.join("\n") !== [...this.rows.keys()].join("\n")) {
      this.rows.clear();
      this.body.replaceChildren();
      for (const name of names) {
        const cells = {
          name: el("th", { scope: "row" }, name),
          state: el("td", { className: "state" }),
          revision: el("td", { className: "num" }),
          when: el("td"),
          by: el("td"),
          took: el("td", { className: "num" }),
          error: el("td", { className: "error-text" }),
        };
        const row = el("tr", { dataset: { node: name } }, ...Object.values(cells));
        this.rows.set(name, cells);
        this.body.append(row);
      }
    }
    for (const node of status.nodes) {
      const cells = this.rows.get(node.name);
      const record = records.get(node.name);
      const state = nodeState(node, record);
      setText(cells.state, state);
      setClass(cells.state, `state ${state}`);
      cells.state.dataset.state = state;
      const deployed = node.revision === null || node.revision === undefined ? "never" : String(node.revision);
      setText(cells.revision, node.converged || deployed === "never" ? deployed : `${deployed} (store ${status.revision})`);
      setText(cells.when, record ? `${ago(record.when)} (${stamp(record.when)})` : "never");
      setText(cells.by, record ? record.by || "unknown" : "");
      setText(cells.took, record && record.seconds ? duration(record.seconds) : "");
      setText(cells.error, node.error || (record && record.result === "failed" ? record.error : ""));
    }
  }
}
