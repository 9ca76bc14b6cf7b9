// Chorus browser chat UI. Plain JS, no dependencies.
"use strict";

(() => {
  const KEY = "chorus.key";
  const CURRENT = "chorus.current";
  const DEGRADED = {
    model: "Answered by a smaller model because the service is busy.",
    store: "Conversation history is temporarily unavailable; this answer may not be saved.",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    keyView: $("key-view"), keyForm: $("key-form"), keyInput: $("key-input"), keyError: $("key-error"),
    app: $("app"), tier: $("tier-badge"), userName: $("user-name"), newChat: $("new-chat"),
    list: $("conversation-list"), signOut: $("sign-out"), menu: $("menu"), scrim: $("scrim"),
    title: $("chat-title"), banner: $("banner"), messages: $("messages"),
    composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  };
  const state = { key: null, current: null, ctrl: null, conversations: [], listSeq: 0, openSeq: 0 };

  // ---------- helpers ----------
  const store = {
    get(k) { try { return localStorage.getItem(k); } catch { return null; } },
    set(k, v) { try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, v); } catch { /* ignore */ } },
  };

  // Creates an element; text always goes through textContent (never innerHTML).
  function el(tag, className, text, attrs = {}) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  async function errorFrom(res) {
    let message = `${res.status} ${res.statusText}`.trim();
    try { message = (await res.json())?.error?.message || message; } catch { /* body was not JSON */ }
    return Object.assign(new Error(message), { status: res.status });
  }

  const headers = (json) => ({ Authorization: `Bearer ${state.key}`, ...(json && { "Content-Type": "application/json" }) });

  async function api(path, { method = "GET", body } = {}) {
    const init = { method, headers: headers(body !== undefined) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const res = await fetch(path, init);
    if (!res.ok) throw await errorFrom(res);
    return res.json();
  }

  // A 401 anywhere sends the user back to the key form.
  function handleAuth(err) {
    if (err?.status === 401) showKeyForm(err.message);
    return err?.status === 401;
  }

  function formatTime(seconds) {
    if (!seconds) return "";
    const d = new Date(seconds * 1000);
    return d.toDateString() === new Date().toDateString()
      ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  const contentText = (c) => Array.isArray(c)
    ? c.filter((p) => p?.type === "text").map((p) => p.text || "").join("") : String(c ?? "");

  // ---------- key ----------
  function keyFromFragment() {
    const m = /(?:^#|&)key=([^&]*)/.exec(location.hash);
    if (!m) return null;
    history.replaceState(null, "", location.pathname + location.search);
    try { return decodeURIComponent(m[1]); } catch { return m[1]; }
  }

  function showKeyForm(message) {
    abortStream();
    ui.app.hidden = true;
    ui.keyView.hidden = false;
    ui.keyError.textContent = message || "";
    ui.keyError.hidden = !message;
    ui.keyInput.focus();
  }

  function signOut() {
    abortStream();
    store.set(KEY, null);
    state.key = null;
    setCurrent(null);
    ui.list.replaceChildren();
    ui.messages.replaceChildren();
    showKeyForm();
  }

  // ---------- current conversation (localStorage + ?c= so a reload reopens it) ----------
  function setCurrent(id) {
    state.current = id || null;
    store.set(CURRENT, state.current);
    const url = new URL(location.href);
    if (state.current) url.searchParams.set("c", state.current);
    else url.searchParams.delete("c");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    markActive();
  }

  function markActive() {
    for (const b of ui.list.querySelectorAll("button.conversation")) {
      const on = b.dataset.id === state.current;
      b.classList.toggle("active", on);
      on ? b.setAttribute("aria-current", "true") : b.removeAttribute("aria-current");
    }
    const conv = state.conversations.find((c) => c.id === state.current);
    if (conv && conv.title) ui.title.textContent = conv.title;
  }

  // ---------- sidebar ----------
  async function loadList() {
    const seq = ++state.listSeq;
    try {
      const res = await api("/v1/conversations?limit=50");
      if (seq === state.listSeq) renderList(Array.isArray(res.data) ? res.data : []);
    } catch (err) {
      if (handleAuth(err) || seq !== state.listSeq) return;
      ui.list.replaceChildren(el("li", "list-note error", `Could not load conversations: ${err.message}`));
    }
  }

  function renderList(items) {
    state.conversations = items;
    const frag = document.createDocumentFragment();
    if (!items.length) frag.append(el("li", "list-note", "No conversations yet"));
    for (const c of items) {
      const title = c.title || ("Chat of " + new Date((c.created_at || 0) * 1000).toLocaleString());
      const b = el("button", "conversation", null, { type: "button", "data-id": c.id, title });
      b.append(el("span", "conversation-title", title),
        el("span", "conversation-date", formatTime(c.updated_at || c.created_at)));
      const li = el("li");
      li.append(b);
      frag.append(li);
    }
    ui.list.replaceChildren(frag);
    markActive();
  }

  const toggleSidebar = (open) => {
    ui.app.classList.toggle("sidebar-open", open);
    ui.menu.setAttribute("aria-expanded", String(open));
  };

  // ---------- banner ----------
  function showBanner(text, kind = "warn") {
    ui.banner.textContent = text;
    ui.banner.dataset.kind = kind;
    ui.banner.hidden = false;
  }

  const clearBanner = () => { ui.banner.hidden = true; ui.banner.textContent = ""; };

  function showDegraded(value) {
    const parts = (value || "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
    if (parts.length) showBanner(parts.map((p) => DEGRADED[p] || `Service degraded (${p}).`).join(" "));
  }

  // ---------- messages ----------
  const nearBottom = () => ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
  const scrollBottom = () => { ui.messages.scrollTop = ui.messages.scrollHeight; };

  function appendNode(node) {
    const stick = nearBottom();
    ui.messages.querySelector(".empty-state")?.remove();
    ui.messages.append(node);
    if (stick) scrollBottom();
  }

  const showEmptyState = (text = "Ask anything to start a new conversation.") =>
    ui.messages.replaceChildren(el("p", "empty-state", text));

  // Assistant turns are wrapped: .reply > .message.assistant + .error? + .meta + .actions
  function addAssistant(text, streaming) {
    const reply = el("div", "reply");
    const msg = el("div", "message assistant", text);
    const meta = el("div", "meta");
    const actions = el("div", "actions", null, { role: "group", "aria-label": "Rate this answer" });
    meta.hidden = actions.hidden = true;
    for (const [rating, label] of [["up", "Good answer"], ["down", "Bad answer"]]) {
      actions.append(el("button", "thumb", null,
        { type: "button", "data-rating": rating, title: label, "aria-label": label, "aria-pressed": "false" }));
    }
    if (streaming) {
      msg.classList.add("streaming");
      reply.setAttribute("aria-busy", "true");
    }
    reply.append(msg, meta, actions);
    appendNode(reply);
    return reply;
  }

  function setMeta(reply, patch) {
    for (const [k, v] of Object.entries(patch)) if (v) reply.dataset[k] = v;
    const meta = reply.querySelector(".meta");
    meta.textContent = [reply.dataset.model, reply.dataset.note].filter(Boolean).join(" · ");
    meta.hidden = !meta.textContent;
  }

  function showError(reply, message) {
    let err = reply.querySelector(".error");
    if (!err) {
      err = el("div", "error", null, { role: "alert" });
      reply.querySelector(".message").after(err);
    }
    err.textContent = message;
  }

  function bindFeedback(reply, conversationId, version) {
    if (!conversationId || version == null) return;
    Object.assign(reply.dataset, { conversationId, version: String(version) });
    reply.querySelector(".actions").hidden = false;
  }

  async function sendFeedback(button) {
    const reply = button.closest(".reply");
    const { conversationId, version } = reply.dataset;
    if (!conversationId || !version) return;
    const buttons = reply.querySelectorAll(".thumb");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const body = { conversation_id: conversationId, version: Number(version), rating: button.dataset.rating };
      await api("/v1/feedback", { method: "POST", body });
      button.setAttribute("aria-pressed", "true");
    } catch (err) {
      buttons.forEach((b) => { b.disabled = false; });
      if (!handleAuth(err)) showError(reply, `Could not send feedback: ${err.message}`);
    }
  }

  // ---------- conversations ----------
  function newChat() {
    abortStream();
    state.openSeq++;
    toggleSidebar(false);
    setCurrent(null);
    clearBanner();
    ui.title.textContent = "New chat";
    showEmptyState();
  }

  async function openConversation(id) {
    abortStream();
    toggleSidebar(false);
    setCurrent(id);
    clearBanner();
    showEmptyState("Loading…");
    const seq = ++state.openSeq;
    try {
      const conv = await api(`/v1/conversations/${encodeURIComponent(id)}`);
      if (seq !== state.openSeq) return;
      const firstUser = ((conv.turns || [])[0]?.input || []).find((m) => m.role === "user");
      const firstText = typeof firstUser?.content === "string" ? firstUser.content : "";
      ui.title.textContent = conv.title || firstText.slice(0, 60) || "Untitled";
      ui.messages.replaceChildren();
      for (const turn of conv.turns || []) {
        for (const m of turn.input || []) {
          if (m.role === "user") appendNode(el("div", "message user", contentText(m.content)));
        }
        const reply = addAssistant(turn.answer || "", false);
        setMeta(reply, { model: turn.model, note: turn.finish_reason === "length" ? "cut off at length limit" : "" });
        bindFeedback(reply, conv.id || id, turn.version);
      }
      if (!ui.messages.childElementCount) showEmptyState();
      scrollBottom();
    } catch (err) {
      if (handleAuth(err) || seq !== state.openSeq) return;
      if (err.status === 404) setCurrent(null);
      ui.messages.replaceChildren(el("p", "error", `Could not open conversation: ${err.message}`));
    }
  }

  // ---------- streaming ----------
  const setBusy = (busy) => { ui.send.disabled = busy; ui.stop.hidden = !busy; };

  function abortStream() {
    if (!state.ctrl) return;
    state.ctrl.abort();
    state.ctrl = null;
    setBusy(false);
  }

  // Minimal Server-Sent Events reader: calls onData(payload) per event; returns at [DONE] or EOF.
  async function readSSE(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let data = [];
    const dispatch = () => {
      if (!data.length) return false;
      const payload = data.join("\n");
      data = [];
      if (payload === "[DONE]") return true;
      onData(payload);
      return false;
    };
    const line = (raw) => {
      const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (text === "") return dispatch(); // blank line ends an event
      if (text.startsWith(":")) return false; // comment / keep-alive
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let val = colon < 0 ? "" : text.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "data") data.push(val); // `id:` and `event:` are not needed here
      return false;
    };
    for (;;) {
      const { value, done } = await reader.read();
      buf += decoder.decode(value || new Uint8Array(), { stream: !done });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const raw = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line(raw)) { reader.cancel().catch(() => {}); return; }
      }
      if (done) {
        if (buf) line(buf);
        dispatch();
        return;
      }
    }
  }

  async function send(text) {
    const conversationId = state.current;
    clearBanner();
    appendNode(el("div", "message user", text));
    const reply = addAssistant("", true);
    const msg = reply.querySelector(".message");
    const ctrl = new AbortController();
    state.ctrl = ctrl;
    setBusy(true);

    const body = { model: "chorus", stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content: text }] };
    if (conversationId) body.conversation_id = conversationId;
    else body.store = true;

    try {
      const res = await fetch("/v1/chat/completions",
        { method: "POST", headers: headers(true), body: JSON.stringify(body), signal: ctrl.signal });
      if (!res.ok) throw await errorFrom(res);
      const headerId = res.headers.get("x-chorus-conversation-id");
      if (headerId && state.ctrl === ctrl) setCurrent(headerId);
      showDegraded(res.headers.get("x-chorus-degraded"));
      const model = res.headers.get("x-chorus-model");
      if (model) setMeta(reply, { model });

      await readSSE(res.body, (payload) => {
        if (state.ctrl !== ctrl) return;
        let chunk;
        try { chunk = JSON.parse(payload); } catch { return; }
        if (chunk.error) {
          showError(reply, chunk.error.message || "The answer could not be completed.");
          return;
        }
        const choice = chunk.choices?.[0];
        const delta = choice?.delta?.content;
        if (delta) {
          const stick = nearBottom();
          msg.append(delta);
          if (stick) scrollBottom();
        }
        if (!model && chunk.model && chunk.model !== "chorus") setMeta(reply, { model: chunk.model });
        if (choice?.finish_reason === "length") setMeta(reply, { note: "cut off at length limit" });
        const ext = chunk.chorus;
        if (ext) {
          if (ext.conversation_id) setCurrent(ext.conversation_id);
          bindFeedback(reply, ext.conversation_id || state.current, ext.turn_version);
        }
      });
    } catch (err) {
      if (err.name === "AbortError") setMeta(reply, { note: "stopped" });
      else if (!handleAuth(err)) showError(reply, err.message || "Request failed.");
    } finally {
      msg.classList.remove("streaming");
      msg.normalize();
      reply.removeAttribute("aria-busy");
      if (state.ctrl === ctrl) {
        state.ctrl = null;
        setBusy(false);
      }
      if (state.key) loadList();
    }
  }

  // ---------- startup ----------
  async function start() {
    ui.keyView.hidden = true;
    let problem = null;
    try {
      const me = await api("/v1/me");
      ui.tier.textContent = me.tier || "";
      ui.tier.hidden = !me.tier;
      ui.userName.textContent = me.user ? `${me.user}${me.tenant ? ` @ ${me.tenant}` : ""}` : "";
    } catch (err) {
      if (handleAuth(err)) return;
      problem = err;
    }
    ui.app.hidden = false;
    const initial = new URLSearchParams(location.search).get("c") || store.get(CURRENT);
    loadList();
    if (initial) openConversation(initial);
    else newChat();
    if (problem) showBanner(`Could not reach Chorus: ${problem.message}`, "error");
  }

  const autosize = () => {
    ui.prompt.style.height = "auto";
    ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 200)}px`;
  };

  ui.keyForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    state.key = key;
    store.set(KEY, key);
    ui.keyInput.value = "";
    start();
  });
  ui.signOut.addEventListener("click", (e) => { e.preventDefault(); signOut(); });
  ui.newChat.addEventListener("click", () => { newChat(); ui.prompt.focus(); });
  ui.list.addEventListener("click", (e) => {
    const b = e.target.closest("button.conversation");
    if (b) openConversation(b.dataset.id);
  });
  ui.menu.addEventListener("click", () => toggleSidebar(!ui.app.classList.contains("sidebar-open")));
  ui.scrim.addEventListener("click", () => toggleSidebar(false));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") toggleSidebar(false); });
  ui.messages.addEventListener("click", (e) => {
    const b = e.target.closest("button.thumb");
    if (b && !b.disabled) sendFeedback(b);
  });
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.prompt.value.trim();
    if (!text || state.ctrl) return;
    ui.prompt.value = "";
    autosize();
    send(text);
  });
  ui.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.prompt.addEventListener("input", autosize);
  ui.stop.addEventListener("click", abortStream);

  const fragmentKey = keyFromFragment();
  if (fragmentKey) store.set(KEY, fragmentKey);
  state.key = fragmentKey || store.get(KEY);
  if (state.key) start();
  else showKeyForm();
})();
