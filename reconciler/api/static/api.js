// The REST API with the user's token (X-Auth-Token), and whether serve answers.

const KEY = "obreconcile.session";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.detail = body ? body.detail : null;
  }
}

export class Api {
  constructor(onConnection) {
    this.onConnection = onConnection; // (ok: boolean, detail: string) => void
    const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
    this.session = saved && saved.token ? saved : null; // {token, user, expires}
    this.connected = true;
  }

  get loggedIn() { return this.session !== null; }

  save(session) {
    this.session = session;
    if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
    else sessionStorage.removeItem(KEY);
  }

  async call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.session) headers["X-Auth-Token"] = this.session.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "omit" });
    } catch (error) {
      this.setConnected(false, "serve does not answer");
      throw new ApiError(0, { error: "serve does not answer" });
    }
    if (response.status === 503 || response.status >= 502) {
      const answer = await response.json().catch(() => null);
      this.setConnected(false, answer && answer.error ? answer.error : `HTTP ${response.status}`);
      throw new ApiError(response.status, answer);
    }
    this.setConnected(true, "");
    if (response.status === 204) return null;
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      if (response.status === 401 && path !== "/auth") this.save(null);
      throw new ApiError(response.status, answer);
    }
    return answer;
  }

  setConnected(ok, detail) {
    const changed = ok !== this.connected;
    this.connected = ok;
    if (changed || !ok) this.onConnection(ok, detail);
  }

  async login(user, password) {
    const answer = await this.call("POST", "/auth", { user_name: user, password });
    this.save({ token: answer.token, user, expires: Date.parse(answer.token_expiration) });
  }

  /** Renew the token when less than a quarter of an hour is left. */
  async renew() {
    if (!this.session || this.session.expires - Date.now() > 15 * 60 * 1000) return;
    const answer = await this.call("POST", "/auth", { token: this.session.token });
    this.save({ ...this.session, expires: Date.parse(answer.token_expiration) });
  }

  async logout() {
    try {
      if (this.session) await this.call("DELETE", "/auth");
    } finally {
      this.save(null);
    }
  }
}
