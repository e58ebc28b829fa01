// Herald's chat page: plain ES module over the official centrifuge-js SDK
// (served by management at /vendor/centrifuge.mjs) and management's REST
// history API (same origin). Every message is rendered with textContent,
// never as HTML.
//
// Model: one Room per channel holds its messages by seq (the publication
// offset), so a message seen live, through recovery and from history is
// shown once, in seq order; a hole between known seqs (or below the head
// the relay reported) is filled from REST history.

const PAGE = clampInt(new URLSearchParams(location.search).get('page'), 30, 1, 200); // history page size
const $ = (id) => document.getElementById(id);
const els = {
  fatal: $('fatal'), login: $('login'), loginForm: $('login-form'), loginName: $('login-name'), loginError: $('login-error'),
  tokenForm: $('token-form'), tokenInput: $('token-input'), tokenError: $('token-error'),
  app: $('app'), conn: $('conn'), connText: $('conn-text'), rooms: $('rooms'), joinForm: $('join-form'), joinName: $('join-name'),
  joinError: $('join-error'), meName: $('me-name'), meAvatar: $('me-avatar'), logout: $('logout'),
  roomTitle: $('room-title'), roomState: $('room-state'), scroller: $('scroller'), older: $('older'),
  historyStart: $('history-start'), lists: $('lists'), composer: $('composer'), text: $('text'), sendError: $('send-error'),
  announce: $('announce'), presence: $('presence'), online: $('online'), onlineCount: $('online-count'),
};

const store = {
  get: (k) => { try { return sessionStorage.getItem('herald.' + k); } catch { return null; } },
  set: (k, v) => { try { v == null ? sessionStorage.removeItem('herald.' + k) : sessionStorage.setItem('herald.' + k, v); } catch { /* private mode */ } },
};

let Centrifuge; // the SDK class, imported once the server says it is there
let client;     // the Centrifuge instance
let token = '';
let me = '';
let wasConnected = false;
let presenceSupported = true; // false once the server answered presence with an error
const rooms = new Map();      // channel → Room
let active = null;            // the Room shown

main().catch((err) => fatal(`Could not start: ${err.message || err}`));

async function main() {
  const cfg = await (await fetch('/ui/config.json', { cache: 'no-store' })).json();
  if (!cfg.sdk) {
    fatal(cfg.sdk_help || 'centrifuge-js is not installed on the server (make web-deps).');
    return;
  }
  ({ Centrifuge } = await import('/vendor/centrifuge.mjs'));
  const params = new URLSearchParams(location.search);
  const relayOverride = params.get('relay');
  const defaultRelay = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.hostname}:8000/connection/websocket`;
  bindUI();

  // A token from the embedding app: #token=… (a fragment never reaches a server log).
  window.addEventListener('hashchange', () => { if (location.hash.includes('token=')) location.reload(); });
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get('token')) {
    store.set('token', hash.get('token'));
    history.replaceState(null, '', location.pathname + location.search);
  }
  if (cfg.dev) {
    const devToken = async (name) => {
      const res = await fetch('/dev/token', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name }),
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error || `token endpoint answered ${res.status}`);
      return body;
    };
    const start = async (name) => {
      const body = await devToken(name);
      store.set('name', name);
      // A dev token lasts 24 h; the SDK asks for a new one when it expires.
      const refresh = async () => { token = (await devToken(name)).token; return token; };
      connect(body.token, relayOverride || body.url, body.channels, refresh);
    };
    els.loginForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      els.loginError.textContent = '';
      const name = els.loginName.value.trim();
      if (!els.loginName.checkValidity() || !name) {
        els.loginError.textContent = 'Use 1 to 32 letters, digits, ".", "_" or "-", starting with a letter or digit.';
        els.loginName.focus();
        return;
      }
      try { await start(name); } catch (err) { els.loginError.textContent = err.message; }
    });
    const saved = store.get('name');
    if (saved) {
      try { await start(saved); return; } catch { store.set('name', null); }
    }
    show(els.login); els.loginForm.hidden = false; els.tokenForm.hidden = true;
    els.loginName.focus();
    return;
  }
  const relay = relayOverride || cfg.relay_url || defaultRelay;
  els.tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const t = els.tokenInput.value.trim();
    if (!jwtPayload(t)) { els.tokenError.textContent = 'That is not a JWT.'; return; }
    store.set('token', t);
    connect(t, relay, null);
  });
  if (store.get('token') && jwtPayload(store.get('token'))) {
    connect(store.get('token'), relay, null);
    return;
  }
  show(els.login); els.loginForm.hidden = true; els.tokenForm.hidden = false;
  els.tokenInput.focus();
}

function show(el) {
  for (const e of [els.login, els.app]) e.hidden = e !== el;
}

function fatal(msg) {
  els.fatal.textContent = msg;
  els.fatal.hidden = false;
  els.login.hidden = true;
  els.app.hidden = true;
}

// --- connection -----------------------------------------------------------

function connect(tok, url, serverChannels, getToken) {
  token = tok;
  const claims = jwtPayload(tok) || {};
  me = claims.sub || '?';
  els.meName.textContent = me;
  paintAvatar(els.meAvatar, me);
  show(els.app);

  client = new Centrifuge(url, getToken ? { token: tok, getToken } : { token: tok });
  client.on('connecting', (ctx) => setConn(wasConnected ? 'reconnecting' : 'connecting', ctx.reason));
  client.on('connected', () => { wasConnected = true; setConn('connected'); });
  client.on('disconnected', (ctx) => setConn('disconnected', ctx.reason));
  client.on('error', () => { /* transport errors surface as connecting/disconnected states */ });
  // Server-side subscriptions (the token's channels).
  client.on('subscribed', (ctx) => room(ctx.channel, true).onSubscribed(ctx));
  client.on('subscribing', (ctx) => rooms.get(ctx.channel)?.setState('subscribing'));
  client.on('publication', (ctx) => rooms.get(ctx.channel)?.onPublication(ctx));
  client.on('join', (ctx) => rooms.get(ctx.channel)?.onJoin(ctx.info));
  client.on('leave', (ctx) => rooms.get(ctx.channel)?.onLeave(ctx.info));

  for (const ch of serverChannels || claims.channels || []) room(ch, true);
  for (const ch of savedRooms()) if (!rooms.has(ch)) room(ch, false).subscribe();
  const want = store.get('active');
  select(rooms.get(want) || rooms.values().next().value || null);
  client.connect();
}

const connLabels = { connecting: 'Connecting…', connected: 'Connected', reconnecting: 'Reconnecting…', disconnected: 'Disconnected' };

function setConn(state, reason) {
  els.conn.dataset.state = state;
  els.connText.textContent = connLabels[state];
  els.conn.title = reason ? `${connLabels[state]} (${reason})` : connLabels[state];
  if (state !== 'connected') for (const r of rooms.values()) if (r.state === 'live' || r.state === 'recovered') r.setState('waiting');
}

// --- rooms ----------------------------------------------------------------

function room(channel, server) {
  let r = rooms.get(channel);
  if (!r) {
    r = new Room(channel, server);
    rooms.set(channel, r);
    if (!active) select(r);
  }
  return r;
}

function savedRooms() {
  try { return JSON.parse(localStorage.getItem(`herald.rooms.${me}`) || '[]').filter(validChannel); } catch { return []; }
}

function saveRooms() {
  const list = [...rooms.values()].filter((r) => !r.server).map((r) => r.channel);
  try { localStorage.setItem(`herald.rooms.${me}`, JSON.stringify(list)); } catch { /* private mode */ }
}

const validChannel = (ch) => typeof ch === 'string' && /^chat:[A-Za-z0-9_.\-]{1,64}$/.test(ch);

class Room {
  constructor(channel, server) {
    this.channel = channel;
    this.server = server;      // a server-side subscription (from the token)
    this.sub = null;           // the client-side Subscription
    this.msgs = new Map();     // seq → message
    this.head = 0;             // the latest seq known to exist
    this.minSeq = Infinity;    // the oldest and newest seq shown
    this.maxSeq = 0;
    this.cursor = null;        // next_cursor of the oldest page loaded; '' = beginning reached
    this.unread = 0;
    this.state = 'subscribing';
    this.presence = new Map(); // client id → user
    this.filling = false;
    this.subscribedOnce = false;

    this.list = document.createElement('ol');
    this.list.className = 'messages';
    this.list.dataset.channel = channel;
    this.list.hidden = true;
    els.lists.append(this.list);

    const li = document.createElement('li');
    this.button = document.createElement('button');
    this.button.type = 'button';
    this.button.className = 'room';
    this.button.dataset.channel = channel;
    const hash = document.createElement('span');
    hash.className = 'hash';
    hash.setAttribute('aria-hidden', 'true');
    hash.textContent = '#';
    this.label = document.createElement('span');
    this.label.className = 'room-name';
    this.label.textContent = shortName(channel);
    this.badge = document.createElement('span');
    this.badge.className = 'badge';
    this.badge.hidden = true;
    this.button.append(hash, this.label, this.badge);
    this.button.addEventListener('click', () => { select(this); els.text.focus(); });
    li.append(this.button);
    els.rooms.append(li);
  }

  subscribe() {
    if (this.server) return;
    this.sub = client.newSubscription(this.channel);
    this.sub.on('subscribing', () => this.setState('subscribing'));
    this.sub.on('subscribed', (ctx) => this.onSubscribed(ctx));
    this.sub.on('publication', (ctx) => this.onPublication(ctx));
    this.sub.on('join', (ctx) => this.onJoin(ctx.info));
    this.sub.on('leave', (ctx) => this.onLeave(ctx.info));
    this.sub.on('unsubscribed', (ctx) => this.setState('unsubscribed', ctx.reason));
    this.sub.on('error', () => { /* reflected by the subscribing/unsubscribed states */ });
    this.sub.subscribe();
    saveRooms();
  }

  setState(state, detail) {
    this.state = state;
    this.stateDetail = detail || '';
    if (this === active) paintRoomState();
  }

  onSubscribed(ctx) {
    const head = ctx.streamPosition ? Number(ctx.streamPosition.offset) : 0;
    this.head = Math.max(this.head, head);
    const first = !this.subscribedOnce;
    this.subscribedOnce = true;
    if (ctx.wasRecovering && ctx.recovered) {
      // Recovered publications are delivered right after this event.
      const before = this.msgs.size;
      this.setState('recovered');
      setTimeout(() => {
        const n = this.msgs.size - before;
        this.notice(n > 0 ? `Back online: ${n} missed message${n === 1 ? '' : 's'} recovered, no gap.` : 'Back online: nothing missed.');
      }, 0);
    } else if (ctx.wasRecovering) {
      this.setState('resynced');
      this.notice('Back online: the server could not replay what was missed; loaded it from history.');
    } else {
      this.setState('live');
    }
    if (first && (head > 0 || !ctx.streamPosition)) this.loadOlder(); // the latest page
    else if (first) { this.cursor = ''; if (this === active) paintHistoryTop(); } // an empty channel
    this.fillGaps();
    this.loadPresence();
  }

  onPublication(ctx) {
    const m = {
      seq: Number(ctx.offset), user: ctx.info?.user || '', data: ctx.data, time: new Date(),
    };
    if (!m.seq) return;
    const isNew = !this.msgs.has(m.seq);
    this.head = Math.max(this.head, m.seq);
    this.add([m], true);
    if (isNew && m.user !== me) {
      if (this === active) {
        els.announce.textContent = `${m.user}: ${messageText(m.data)}`; // screen readers, as text
      } else {
        this.unread++;
        paintBadge(this);
      }
    }
    this.fillGaps();
  }

  // add renders messages not shown yet, keeping the list sorted by seq.
  add(list, live) {
    const stick = live && this === active && nearBottom();
    for (const m of list) {
      if (this.msgs.has(m.seq)) continue;
      this.msgs.set(m.seq, m);
      const li = renderMessage(m);
      if (this.msgs.size === 1 || m.seq > this.maxSeq) {
        this.list.append(li); // live, usually
      } else if (m.seq < this.minSeq) {
        this.list.insertBefore(li, this.list.querySelector('li[data-seq]')); // an older page
      } else {
        // A filled gap: after the last message with a smaller seq.
        let prev = this.list.lastElementChild;
        while (prev && !(prev.dataset.seq && Number(prev.dataset.seq) < m.seq)) prev = prev.previousElementSibling;
        prev.after(li);
      }
      this.minSeq = Math.min(this.minSeq, m.seq);
      this.maxSeq = Math.max(this.maxSeq, m.seq);
      groupWithNeighbours(li);
    }
    if (stick) scrollToBottom();
  }

  notice(text) {
    const li = document.createElement('li');
    li.className = 'system';
    li.textContent = text;
    this.list.append(li);
    if (this === active && nearBottom(200)) scrollToBottom();
  }

  async history(params) {
    const q = new URLSearchParams(params);
    const res = await fetch(`/v1/channels/${encodeURIComponent(this.channel)}/messages?${q}`, {
      headers: { Authorization: `Bearer ${token}` }, cache: 'no-store',
    });
    if (res.status === 404) return { messages: [], next_cursor: '' };
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error(body.error || `history answered ${res.status}`);
    }
    return res.json();
  }

  // loadOlder loads the page before the oldest one loaded (the latest page
  // the first time). Pages cross the S3 archive boundary seamlessly: the
  // API merges archive and store.
  async loadOlder(attempt = 0) {
    if (this.loading || this.cursor === '') return;
    this.loading = true;
    if (this === active) paintHistoryTop();
    try {
      const params = this.cursor ? { cursor: this.cursor, limit: PAGE } : { limit: PAGE };
      const page = await this.history(params);
      const keep = this === active ? els.scroller.scrollHeight - els.scroller.scrollTop : null;
      this.add(page.messages.map(fromHistory), false);
      if (this.cursor === null && page.messages.length === 0 && this.head > 0 && attempt < 20) {
        // Persistence is asynchronous: the head may not be stored yet.
        this.loading = false;
        setTimeout(() => this.loadOlder(attempt + 1), 300);
        return;
      }
      this.cursor = page.next_cursor || '';
      if (keep !== null) {
        if (params.cursor) els.scroller.scrollTop = els.scroller.scrollHeight - keep;
        else scrollToBottom();
      }
    } catch (err) {
      this.notice(`Could not load history: ${err.message}`);
    } finally {
      this.loading = false;
      if (this === active) paintHistoryTop();
    }
    this.fillGaps();
  }

  // firstMissing is the lowest seq between the oldest shown and the head
  // that is not shown, or 0.
  firstMissing() {
    if (this.msgs.size === 0) return 0;
    for (let s = this.minSeq; s <= this.head; s++) if (!this.msgs.has(s)) return s;
    return 0;
  }

  // fillGaps fetches from REST history what is missing above the oldest
  // message shown (missed while away and not replayed, or not yet stored
  // when the page first asked; persistence is asynchronous, so it retries).
  async fillGaps(attempt = 0) {
    if (this.filling) return;
    const miss = this.firstMissing();
    if (!miss) return;
    this.filling = true;
    let got = 0;
    try {
      const page = await this.history({ after: miss - 1, order: 'asc', limit: 200 });
      const before = this.msgs.size;
      this.add(page.messages.map(fromHistory), true);
      got = this.msgs.size - before;
    } catch { /* retried below */ }
    this.filling = false;
    if (!this.firstMissing()) return;
    if (got > 0) this.fillGaps(0);
    else if (attempt < 20) setTimeout(() => this.fillGaps(attempt + 1), 200 * (attempt + 1));
  }

  async loadPresence() {
    if (!presenceSupported) return;
    try {
      const res = this.server ? await client.presence(this.channel) : await this.sub.presence();
      this.presence = new Map(Object.entries(res.clients || {}).map(([id, info]) => [id, info.user]));
      if (this === active) paintPresence();
    } catch {
      // Herald answers presence with an error until it supports it
      // (108 not available): hide the panel, quietly.
      presenceSupported = false;
      paintPresence();
    }
  }

  onJoin(info) {
    if (!info) return;
    this.presence.set(info.client, info.user);
    if (info.user !== me) this.notice(`${info.user} joined`);
    if (this === active) paintPresence();
  }

  onLeave(info) {
    if (!info) return;
    this.presence.delete(info.client);
    if (info.user !== me && ![...this.presence.values()].includes(info.user)) this.notice(`${info.user} left`);
    if (this === active) paintPresence();
  }

  async publish(data) {
    if (this.server) return client.publish(this.channel, data);
    return this.sub.publish(data);
  }
}

function fromHistory(h) {
  return { seq: Number(h.seq), user: h.sender || '', data: h.data, time: new Date(h.published_at) };
}

function messageText(data) {
  if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
  return JSON.stringify(data);
}

function renderMessage(m) {
  const li = document.createElement('li');
  li.className = 'msg';
  li.dataset.seq = String(m.seq);
  li.dataset.user = m.user;
  if (m.user === me) li.classList.add('mine');
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  avatar.setAttribute('aria-hidden', 'true');
  paintAvatar(avatar, m.user);
  const body = document.createElement('div');
  body.className = 'body';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = m.user || 'unknown';
  const time = document.createElement('time');
  time.dateTime = m.time.toISOString();
  time.textContent = m.time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  time.title = m.time.toLocaleString();
  meta.append(who, time);
  const text = document.createElement('p');
  text.className = 'text';
  text.textContent = messageText(m.data); // text, never HTML
  body.append(meta, text);
  li.append(avatar, body);
  return li;
}

// groupWithNeighbours hides the avatar and name of a message that follows
// one of the same sender within five minutes.
function groupWithNeighbours(li) {
  const cont = (el) => {
    if (!el || !el.dataset.seq) return;
    const prev = el.previousElementSibling;
    const same = prev && prev.dataset.seq && prev.dataset.user === el.dataset.user &&
      Math.abs(Date.parse(el.querySelector('time').dateTime) - Date.parse(prev.querySelector('time').dateTime)) < 5 * 60e3;
    el.classList.toggle('cont', !!same);
  };
  cont(li);
  cont(li.nextElementSibling);
}

function paintAvatar(el, name) {
  el.textContent = (name || '?').slice(0, 1).toUpperCase();
  let h = 0;
  for (const ch of name || '') h = (h * 31 + ch.codePointAt(0)) % 360;
  el.style.setProperty('--hue', String(h));
}

function paintBadge(r) {
  r.badge.hidden = r.unread === 0;
  r.badge.textContent = r.unread > 99 ? '99+' : String(r.unread);
  r.button.setAttribute('aria-label', r.unread ? `${shortName(r.channel)}, ${r.unread} unread` : shortName(r.channel));
}

const roomStates = {
  subscribing: 'Joining…', live: 'Live', waiting: 'Waiting for the connection…',
  recovered: 'Recovered · no gap', resynced: 'Resynced from history', unsubscribed: 'Not subscribed',
};

function paintRoomState() {
  if (!active) return;
  els.roomState.dataset.state = active.state;
  els.roomState.textContent = roomStates[active.state] + (active.stateDetail && active.state === 'unsubscribed' ? ` (${active.stateDetail})` : '');
}

function paintHistoryTop() {
  if (!active) return;
  els.older.hidden = active.cursor === '' || active.cursor === null && !active.loading;
  els.older.disabled = !!active.loading;
  els.older.textContent = active.loading ? 'Loading…' : 'Load older messages';
  els.historyStart.hidden = active.cursor !== '';
  els.historyStart.textContent = `This is the beginning of #${shortName(active.channel)}.`;
}

function paintPresence() {
  if (!presenceSupported || !active) { els.presence.hidden = true; els.app.classList.remove('with-presence'); return; }
  els.presence.hidden = false;
  els.app.classList.add('with-presence');
  const users = [...new Set(active.presence.values())].sort();
  els.onlineCount.textContent = `(${users.length})`;
  els.online.replaceChildren(...users.map((u) => {
    const li = document.createElement('li');
    const a = document.createElement('span');
    a.className = 'avatar';
    a.setAttribute('aria-hidden', 'true');
    paintAvatar(a, u);
    const n = document.createElement('span');
    n.textContent = u;
    li.append(a, n);
    return li;
  }));
}

function select(r) {
  if (!r) return;
  active = r;
  store.set('active', r.channel);
  for (const x of rooms.values()) {
    x.list.hidden = x !== r;
    x.button.classList.toggle('active', x === r);
    if (x === r) x.button.setAttribute('aria-current', 'true'); else x.button.removeAttribute('aria-current');
  }
  r.unread = 0;
  paintBadge(r);
  els.roomTitle.textContent = '';
  const hash = document.createElement('span');
  hash.className = 'hash';
  hash.setAttribute('aria-hidden', 'true');
  hash.textContent = '#';
  els.roomTitle.append(hash, shortName(r.channel));
  els.roomTitle.title = r.channel;
  els.text.placeholder = `Message #${shortName(r.channel)}`;
  paintRoomState();
  paintHistoryTop();
  paintPresence();
  scrollToBottom();
}

const shortName = (ch) => ch.startsWith('chat:') ? ch.slice(5) : ch;

function nearBottom(px = 80) {
  const s = els.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < px;
}

function scrollToBottom() {
  els.scroller.scrollTop = els.scroller.scrollHeight;
}

// --- UI events ------------------------------------------------------------

function bindUI() {
  els.composer.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = els.text.value;
    if (!text.trim() || !active) return;
    els.sendError.textContent = '';
    const r = active;
    els.text.value = '';
    try {
      await r.publish({ text });
    } catch (err) {
      if (!els.text.value) els.text.value = text;
      els.sendError.textContent = `Not sent: ${err.message || 'error ' + err.code}`;
    }
  });
  els.joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    els.joinError.textContent = '';
    let name = els.joinName.value.trim().replace(/^#/, '');
    if (name.startsWith('chat:')) name = name.slice(5);
    const ch = 'chat:' + name;
    if (!validChannel(ch)) {
      els.joinError.textContent = 'Use letters, digits, ".", "_" or "-".';
      return;
    }
    els.joinName.value = '';
    let r = rooms.get(ch);
    if (!r) { r = room(ch, false); r.subscribe(); }
    select(r);
    els.text.focus();
  });
  els.older.addEventListener('click', () => active?.loadOlder());
  // Scrolling to the top loads older messages.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && active && active.cursor) active.loadOlder();
  }, { root: els.scroller }).observe(els.older);
  els.logout.addEventListener('click', () => {
    store.set('name', null); store.set('token', null); store.set('active', null);
    client?.disconnect();
    location.reload();
  });
  document.addEventListener('keydown', (e) => {
    if (!e.altKey || (e.key !== 'ArrowUp' && e.key !== 'ArrowDown') || !active) return;
    e.preventDefault();
    const list = [...rooms.values()];
    const i = list.indexOf(active) + (e.key === 'ArrowDown' ? 1 : -1);
    select(list[(i + list.length) % list.length]);
    if (document.activeElement?.classList.contains('room')) active.button.focus();
  });
}

// --- helpers --------------------------------------------------------------

function jwtPayload(t) {
  const parts = (t || '').split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - b64.length % 4) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function clampInt(s, def, lo, hi) {
  const n = Number.parseInt(s, 10);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : def;
}
