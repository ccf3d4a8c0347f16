// Kiln operator view: reads the admin API (the session cookie stands in for the token, for
// reads only) and follows its event stream; every machine-supplied string goes in through
// textContent, never as markup.
'use strict';

(() => {
  const STATES = ['idle', 'pending', 'netbooting', 'running', 'rebooting', 'succeeded', 'failed', 'timed-out'];
  const UNFINISHED = new Set(['pending', 'netbooting', 'running', 'rebooting']);
  const PHASES = {
    'power-on': 'power on (BMC)', 'first-dhcp': 'first DHCP', 'ipxe-script': 'iPXE script',
    'kernel-fetch': 'kernel + initrd', 'agent-up': 'agent up', 'action': 'action',
    'reboot': 'reboot to disk', 'phone-home': 'phone home',
  };
  // How often what events do not announce is read again: image progress (the agent reports
  // it to the workflow, not as events), the selected machine's running phase, the rest.
  const PROGRESS_MS = 2000;
  const SLOW_MS = 15000;

  const $ = (sel) => document.querySelector(sel);
  const machines = new Map(); // hostname -> {hw, wf}
  let selected = null;

  // A page id that a reload would change: the e2e test checks tiles change under the same one.
  document.documentElement.dataset.pageId = String(Math.random()).slice(2);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  async function api(path) {
    const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (r.status === 401) {
      location.assign('/ui/login');
      throw new Error('the session has ended');
    }
    if (!r.ok) {
      const e = new Error(`${path}: HTTP ${r.status}`);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }
  const seg = encodeURIComponent;
  const orNull = (p) => p.catch((e) => { if (e.status === 404) return null; throw e; });

  // --- formatting -------------------------------------------------------------------------
  function bytes(n) {
    if (n === null || n === undefined) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }
  function rate(bps) { return bps ? `${bytes(bps)}/s` : ''; }
  function took(ms) {
    if (ms === null || ms === undefined) return '';
    const s = Math.round(ms / 1000);
    if (s < 60) return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
  }
  function when(ms) { return ms ? new Date(ms).toLocaleString() : ''; }

  // --- the rack ---------------------------------------------------------------------------
  const stateOf = (m) => (m.wf ? m.wf.state : 'idle');
  const runningAction = (wf) => (wf && wf.actions ? wf.actions.find((a) => a.state === 'running') : undefined);

  function progressOf(action) {
    const p = action && action.progress;
    if (!p) return null;
    const bar = el('progress', p.total ? { max: String(p.total), value: String(p.done) } : {});
    const text = p.total ? `${bytes(p.done)} of ${bytes(p.total)}` : bytes(p.done);
    return { bar, text: [text, rate(p.rate_bps)].filter(Boolean).join(' · ') };
  }

  function renderLegend() {
    $('#legend').replaceChildren(...STATES.map((s) => el('li', { class: `state-${s}` }, s)));
  }

  function renderTile(name) {
    const m = machines.get(name);
    const grid = $('#machines');
    let tile = grid.querySelector(`.tile[data-machine="${CSS.escape(name)}"]`);
    if (!tile) {
      tile = el('button', { type: 'button', role: 'listitem' });
      tile.dataset.machine = name;
      tile.addEventListener('click', () => select(name));
      const after = [...grid.querySelectorAll('.tile')].find((t) => t.dataset.machine > name);
      grid.insertBefore(tile, after || null);
    }
    const state = stateOf(m);
    tile.className = `tile state-${state}${selected === name ? ' selected' : ''}`;
    tile.dataset.state = state;
    const action = runningAction(m.wf);
    const what = action ? action.name : (m.wf ? m.wf.message || m.wf.template : 'no workflow');
    const parts = [el('span', { class: 'name' }, name), el('span', { class: 'state' }, state),
      el('span', { class: 'what', title: what }, what)];
    const p = progressOf(action);
    if (p) parts.push(p.bar, el('span', { class: 'what progress-text' }, p.text));
    tile.replaceChildren(...parts);
    tile.title = `${name} (${m.hw.ip}, ${m.hw.mac}): ${state}`;
  }

  function renderRack() {
    const grid = $('#machines');
    for (const t of [...grid.querySelectorAll('.tile')]) {
      if (!machines.has(t.dataset.machine)) t.remove();
    }
    grid.querySelectorAll('.empty').forEach((e) => e.remove());
    if (machines.size === 0) grid.append(el('p', { class: 'empty' }, 'No machine is enrolled (kiln enroll hardware.csv).'));
    for (const name of machines.keys()) renderTile(name);
    renderSummary();
  }

  function renderSummary() {
    const counts = {};
    for (const m of machines.values()) counts[stateOf(m)] = (counts[stateOf(m)] || 0) + 1;
    const text = STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(' · ');
    $('#summary').textContent = `${machines.size} machine${machines.size === 1 ? '' : 's'}${text ? ': ' + text : ''}`;
  }

  async function loadRack() {
    const [hw, wfs] = await Promise.all([api('/api/v1/hardware'), api('/api/v1/workflows?all=true')]);
    const newest = new Map();
    for (const wf of wfs) if (!newest.has(wf.machine)) newest.set(wf.machine, wf); // newest first
    const seen = new Set();
    for (const h of hw) {
      seen.add(h.hostname);
      machines.set(h.hostname, { hw: h, wf: newest.get(h.hostname) || null });
    }
    for (const name of [...machines.keys()]) if (!seen.has(name)) machines.delete(name);
    renderRack();
    if (selected && !machines.has(selected)) select(null);
  }

  async function refreshMachine(name) {
    const m = machines.get(name);
    if (!m) return loadRack();
    m.wf = await orNull(api(`/api/v1/workflows/${seg(name)}`));
    renderTile(name);
    renderSummary();
    if (selected === name) await loadDetail();
  }

  // Image progress is reported to the workflow, not as events: while a machine runs, the
  // unfinished workflows are read again.
  async function refreshRunning() {
    const running = [...machines.values()].some((m) => stateOf(m) === 'running');
    if (!running) return;
    for (const wf of await api('/api/v1/workflows')) {
      const m = machines.get(wf.machine);
      if (m && (!m.wf || m.wf.id === wf.id)) { m.wf = wf; renderTile(wf.machine); }
    }
    renderSummary();
    if (selected && UNFINISHED.has(stateOf(machines.get(selected) || {}))) await loadDetail();
  }

  // --- one machine ------------------------------------------------------------------------
  function select(name) {
    selected = name;
    for (const t of document.querySelectorAll('.tile')) t.classList.toggle('selected', t.dataset.machine === name);
    $('#detail').hidden = !name;
    if (name) loadDetail().catch(showError);
  }

  async function loadDetail() {
    const name = selected;
    if (!name) return;
    const [timeline, inventory] = await Promise.all([
      orNull(api(`/api/v1/hardware/${seg(name)}/timeline`)),
      orNull(api(`/api/v1/hardware/${seg(name)}/inventory`)),
    ]);
    if (selected !== name) return;
    const m = machines.get(name);
    $('#detail').dataset.machine = name;
    $('#detail-name').textContent = name;
    const state = m ? stateOf(m) : 'idle';
    const badge = $('#detail-state');
    badge.className = `badge state-${state}`;
    badge.textContent = state;
    if (m) {
      const facts = [`MAC ${m.hw.mac}`, `IP ${m.hw.ip}`, `disk ${m.hw.disk}`];
      if (m.hw.bmc) facts.push(`BMC ${m.hw.bmc.address}`);
      if (m.wf) facts.push(`workflow ${m.wf.id} (${m.wf.template})`);
      $('#detail-facts').textContent = facts.join(' · ');
    }
    renderProgress(m && runningAction(m.wf));
    renderTimeline(timeline);
    renderInventory(inventory);
  }

  function renderProgress(action) {
    const box = $('#image-progress');
    const p = progressOf(action);
    box.hidden = !p;
    if (p) box.replaceChildren(el('strong', {}, `${action.name}: `), p.bar, ' ', el('span', { id: 'image-progress-text' }, p.text));
  }

  function renderTimeline(t) {
    const body = $('#timeline tbody');
    const diag = $('#diagnosis');
    const outcome = $('#outcome');
    if (!t) {
      body.replaceChildren();
      diag.hidden = outcome.hidden = true;
      return;
    }
    body.replaceChildren(...t.phases.map((p) => {
      const over = p.normal_s && p.duration_ms > p.normal_s * 1000;
      const extra = p.bytes ? ` (${bytes(p.bytes)}${p.rate_bps ? ', ' + rate(p.rate_bps) : ''})` : '';
      const row = el('tr', { class: `phase phase-${p.status}${over ? ' over' : ''}` },
        el('td', {}, PHASES[p.phase] || p.phase),
        el('td', {}, p.subject || ''),
        el('td', {}, p.status),
        el('td', { class: 'num' }, took(p.duration_ms)),
        el('td', { class: 'num' }, p.normal_s ? `≤ ${took(p.normal_s * 1000)}` : ''),
        el('td', {}, p.detail + extra));
      row.dataset.phase = p.phase;
      return row;
    }));
    if (t.phases.length === 0) body.append(el('tr', {}, el('td', { colspan: '6', class: 'empty' }, 'No workflow has run on this machine.')));
    diag.hidden = !t.diagnosis;
    if (t.diagnosis) {
      diag.replaceChildren(el('strong', {}, t.diagnosis.summary),
        el('ul', {}, ...t.diagnosis.causes.map((c) => el('li', {}, c))));
    }
    outcome.hidden = !t.outcome;
    outcome.textContent = t.outcome || '';
  }

  function table(head, rows) {
    return el('table', {}, el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
      el('tbody', {}, ...rows.map((r) => el('tr', {}, ...r.map((c) => el('td', {}, c))))));
  }

  function renderInventory(mi) {
    const box = $('#inventory');
    const inv = mi && mi.latest && mi.latest.inventory;
    if (!inv) {
      box.replaceChildren(el('p', { class: 'empty' }, 'No inventory reported yet.'));
      return;
    }
    const facts = [
      `${inv.cpu.model} × ${inv.cpu.cores}`, `${bytes(inv.memory_bytes)} memory`, `firmware ${inv.firmware}`,
      [inv.dmi.vendor, inv.dmi.product, inv.dmi.serial && `serial ${inv.dmi.serial}`].filter(Boolean).join(' '),
      `reported ${when(mi.latest.at_ms)}`,
    ].filter(Boolean);
    const parts = [el('p', { class: 'facts', id: 'inventory-facts' }, facts.join(' · ')),
      table(['Disk', 'Size', 'Model', 'Serial', 'WWN', 'Holds'], inv.disks.map((d) => [
        `/dev/${d.name}`, bytes(d.size_bytes), d.model, d.serial, d.wwn,
        [...d.signatures, ...d.partitions.flatMap((p) => p.signatures.map((s) => `${p.name}: ${s}`))].join(', ') || 'nothing',
      ])),
      table(['NIC', 'MAC', 'Driver', 'Link'], inv.nics.map((n) => [
        n.name, n.mac, n.driver, n.link ? `up${n.speed_mbps ? ' ' + n.speed_mbps + ' Mb/s' : ''}` : 'down',
      ]))];
    if (inv.unbound_pci.length) {
      parts.push(el('p', { class: 'error' }, 'PCI devices without a driver: ' +
        inv.unbound_pci.map((d) => `${d.address} (${d.id}, class ${d.class})`).join(', ')));
    }
    if (mi.installed_disk) {
      const d = mi.installed_disk;
      const what = [d.model, d.serial && `serial ${d.serial}`, d.wwn && `wwn ${d.wwn}`, bytes(d.size_bytes)];
      parts.push(el('p', { class: 'facts' }, `Last installed to: ${what.filter(Boolean).join(', ')}`));
    }
    box.replaceChildren(...parts);
  }

  // --- discovered machines and preflight ---------------------------------------------------
  async function loadDiscovered() {
    const list = await api('/api/v1/discovered');
    $('#discovered-count').textContent = `(${list.length})`;
    const body = $('#discovered tbody');
    body.replaceChildren(...list.map((d) => {
      const row = el('tr', { class: 'discovered' }, el('td', {}, d.mac), el('td', {}, d.client),
        el('td', {}, d.arch === null || d.arch === undefined ? '' : d.arch), el('td', {}, d.vendor_class || ''),
        el('td', {}, d.user_class || ''), el('td', { class: 'num' }, d.count),
        el('td', {}, when(d.first_seen_ms)), el('td', {}, when(d.last_seen_ms)));
      row.dataset.mac = d.mac;
      return row;
    }));
    if (list.length === 0) body.append(el('tr', {}, el('td', { colspan: '8', class: 'empty' }, 'None: every MAC that asked is enrolled.')));
  }

  async function loadPreflight() {
    const last = await orNull(api('/api/v1/preflight/last'));
    const body = $('#preflight tbody');
    if (!last) {
      $('#preflight-summary').textContent = 'No preflight has run on this server since it started (kiln preflight hardware.csv).';
      body.replaceChildren();
      return;
    }
    const r = last.report;
    $('#preflight-summary').textContent = `Last run ${when(last.at_ms)}: ${r.checks.length} checks, ${r.failed} failed, ${r.warnings} warnings.`;
    body.replaceChildren(...r.checks.map((c) => el('tr', {}, el('td', {}, c.machine || '(server)'),
      el('td', {}, c.source || ''), el('td', {}, c.check), el('td', { class: `status-${c.status}` }, c.status),
      el('td', {}, c.detail))));
  }

  // --- live -------------------------------------------------------------------------------
  const dirty = new Set();
  let otherDirty = false;
  let flushing = null;

  function onEvent(ev) {
    if (ev.machine) dirty.add(ev.machine); else otherDirty = true;
    if (!flushing) flushing = setTimeout(flush, 250);
  }

  async function flush() {
    const names = [...dirty];
    const other = otherDirty;
    dirty.clear();
    otherDirty = false;
    try {
      if (names.some((n) => !machines.has(n))) await loadRack();
      for (const n of names) if (machines.has(n)) await refreshMachine(n);
      if (other || names.length) await loadDiscovered();
    } catch (e) {
      showError(e);
    } finally {
      flushing = null;
      if (dirty.size || otherDirty) flushing = setTimeout(flush, 250);
    }
  }

  function follow() {
    const live = $('#live');
    const es = new EventSource('/api/v1/events/stream');
    es.addEventListener('open', () => {
      live.className = 'live-on';
      live.textContent = 'live';
      document.body.dataset.live = 'yes';
    });
    es.addEventListener('event', (m) => {
      try { onEvent(JSON.parse(m.data)); } catch (e) { showError(e); }
    });
    es.addEventListener('error', () => {
      live.className = 'live-off';
      live.textContent = 'reconnecting';
      document.body.dataset.live = 'no';
      // The browser reconnects by itself (with Last-Event-ID); a session that ended sends
      // the page to the login form instead.
      api('/api/v1/discovered').catch(() => {});
    });
  }

  function showError(e) {
    console.error(e);
    $('#live').title = String(e.message || e);
  }

  async function start() {
    renderLegend();
    await Promise.all([loadRack(), loadDiscovered(), loadPreflight()]);
    document.body.dataset.loaded = 'yes';
    follow();
    setInterval(() => refreshRunning().catch(showError), PROGRESS_MS);
    setInterval(() => Promise.all([loadRack(), loadDiscovered(), loadPreflight()]).catch(showError), SLOW_MS);
  }

  start().catch(showError);
})();
