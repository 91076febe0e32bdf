// mediagate room client: join with a join token (URL fragment #token=… or the lobby form),
// publish camera and microphone, see the room composite, hear everyone but yourself.
// Signalling runs over the room WebSocket (webrtc.publish); no build step.
'use strict';

const $ = (id) => document.getElementById(id);
const roomId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop());
const STATE = { VIDEO_ON: 0x4, AUDIO_ON: 0x8 };

const app = {
  token: null, ws: null, me: null, pc: null, screenPc: null, screenSession: null,
  local: null, screen: null, iceServers: [], people: new Map(), pending: new Map(), nextId: 1,
  micOn: true, camOn: true, unread: 0, leaving: false,
};
window.mediagate = app; // for the curious (and for tests reading the page's media)

// ------------------------------------------------------------------ lobby
function fragmentToken() {
  const hash = location.hash.replace(/^#/, '');
  if (!hash) return null;
  const params = new URLSearchParams(hash);
  return params.get('token') || (hash.includes('=') ? null : hash);
}

function slug(name) {
  const base = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'guest';
  return `${base}-${Math.random().toString(36).slice(2, 7)}`;
}

async function startPreview() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    app.local = stream;
    $('preview').srcObject = stream;
  } catch (err) {
    $('lobby-hint').textContent = 'No camera or microphone available: you can still join to watch and listen.';
  }
}

async function lobby() {
  $('lobby-room').textContent = roomId;
  document.title = `${roomId} · mediagate`;
  const token = fragmentToken();
  if (token) return enter(token);
  $('lobby').classList.remove('hidden');
  startPreview();
  $('join-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('lobby-error').textContent = '';
    $('join-button').disabled = true;
    try {
      let token = $('join-token').value.trim();
      if (!token) {
        const name = $('join-name').value.trim();
        const response = await fetch(`/v1/rooms/${encodeURIComponent(roomId)}/join`, {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ identity: slug(name), name, password: $('join-password').value }),
        });
        const body = await response.json();
        if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
        token = body.token;
      }
      app.wantCamera = $('join-camera').checked;
      app.wantMic = $('join-mic').checked;
      await enter(token);
    } catch (err) {
      $('lobby-error').textContent = String(err.message || err);
    } finally {
      $('join-button').disabled = false;
    }
  });
}

// ------------------------------------------------------------------ socket
function send(message) {
  return new Promise((resolve, reject) => {
    const id = app.nextId++;
    app.pending.set(id, { resolve, reject });
    app.ws.send(JSON.stringify({ ...message, id }));
  });
}

function openSocket(token) {
  return new Promise((resolve, reject) => {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/v1/rooms/${encodeURIComponent(roomId)}/ws?access_token=${encodeURIComponent(token)}`);
    app.ws = ws;
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'welcome') return resolve(message);
      if (message.type === 'result' || message.type === 'error') {
        const waiter = app.pending.get(message.id);
        if (!waiter) return message.type === 'error' ? reject(new Error(message.error.message)) : undefined;
        app.pending.delete(message.id);
        return message.type === 'result' ? waiter.resolve(message) : waiter.reject(new Error(message.error.message));
      }
      if (message.type === 'event') return onEvent(message);
      if (message.type === 'closed') return left(message.reason);
    };
    ws.onclose = (event) => { if (!app.leaving) left(event.reason || 'disconnected'); };
    ws.onerror = () => reject(new Error('cannot reach the room'));
  });
}

// ------------------------------------------------------------------ media
async function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise((resolve) => {
    const check = () => pc.iceGatheringState === 'complete' && resolve();
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(resolve, 3000); // host candidates come at once; don't wait on a slow STUN server
  });
}

async function publishCamera() {
  const pc = new RTCPeerConnection({ iceServers: app.iceServers });
  app.pc = pc;
  const stream = app.local;
  const video = stream && app.wantCamera !== false ? stream.getVideoTracks()[0] : null;
  const audio = stream && app.wantMic !== false ? stream.getAudioTracks()[0] : null;
  pc.addTransceiver(video || 'video', { direction: video ? 'sendrecv' : 'recvonly', streams: stream ? [stream] : [] });
  pc.addTransceiver(audio || 'audio', { direction: audio ? 'sendrecv' : 'recvonly', streams: stream ? [stream] : [] });
  app.camOn = !!video; app.micOn = !!audio;
  pc.ontrack = (event) => {
    if (event.track.kind === 'video') {
      $('stage').srcObject = new MediaStream([event.track]);
      $('stage').onloadeddata = () => $('stage-empty').classList.add('hidden');
    } else {
      app.mixStream = new MediaStream([event.track]);
      $('mix').srcObject = app.mixStream;
      $('mix').play().catch(() => {});
    }
  };
  pc.onconnectionstatechange = () => setConnState(pc.connectionState);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const reply = await send({ cmd: 'webrtc.publish', sdp: pc.localDescription.sdp, source: 'camera' });
  await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
  if (!video) await send({ cmd: 'setstate', mask: STATE.VIDEO_ON, state: 0 }).catch(() => {});
  if (!audio) await send({ cmd: 'setstate', mask: STATE.AUDIO_ON, state: 0 }).catch(() => {});
  renderControls();
}

async function toggleMic() {
  const track = app.local && app.local.getAudioTracks()[0];
  if (!track) return;
  app.micOn = !app.micOn;
  track.enabled = app.micOn;
  await send({ cmd: 'setstate', mask: STATE.AUDIO_ON, state: app.micOn ? STATE.AUDIO_ON : 0 }).catch(notice);
  renderControls();
}

async function toggleCamera() {
  const track = app.local && app.local.getVideoTracks()[0];
  if (!track) return;
  app.camOn = !app.camOn;
  track.enabled = app.camOn;
  await send({ cmd: 'setstate', mask: STATE.VIDEO_ON, state: app.camOn ? STATE.VIDEO_ON : 0 }).catch(notice);
  renderControls();
}

async function toggleScreen() {
  if (app.screenPc) return stopScreen();
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (err) {
    return; // the user cancelled the picker
  }
  const pc = new RTCPeerConnection({ iceServers: app.iceServers });
  app.screenPc = pc; app.screen = stream;
  const track = stream.getVideoTracks()[0];
  track.onended = stopScreen;
  pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const reply = await send({ cmd: 'webrtc.publish', sdp: pc.localDescription.sdp, source: 'screen' });
    app.screenSession = reply.session_id;
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
  } catch (err) {
    notice(err);
    stopScreen();
  }
  renderControls();
}

function stopScreen() {
  if (app.screenSession) send({ cmd: 'webrtc.unpublish', session_id: app.screenSession }).catch(() => {});
  if (app.screenPc) app.screenPc.close();
  if (app.screen) app.screen.getTracks().forEach((t) => t.stop());
  app.screenPc = null; app.screen = null; app.screenSession = null;
  renderControls();
}

// ------------------------------------------------------------------ room
async function enter(token) {
  app.token = token;
  app.leaving = false;
  $('lobby').classList.add('hidden');
  $('left').classList.add('hidden');
  $('room').classList.remove('hidden');
  try {
    const config = await fetch('/webrtc/config').then((r) => r.json());
    app.iceServers = config.ice_servers || [];
    const welcome = await openSocket(token);
    app.me = welcome.participant_id;
    $('room-title').textContent = welcome.room.title || welcome.room.topic || roomId;
    app.people.clear();
    for (const p of welcome.room.participants || []) app.people.set(p.participant_id, p);
    renderPeople();
    if (!app.local && (app.wantCamera !== false || app.wantMic !== false)) {
      try {
        app.local = await navigator.mediaDevices.getUserMedia({
          video: app.wantCamera !== false, audio: app.wantMic !== false });
      } catch (err) { app.local = null; }
    }
    await publishCamera();
  } catch (err) {
    left(String(err.message || err));
  }
}

function onEvent(message) {
  const data = message.data || {};
  switch (message.event) {
    case 'participant.joined':
    case 'participant.updated':
      if (data.participant) app.people.set(data.participant.participant_id, data.participant);
      renderPeople();
      break;
    case 'participant.left':
      app.people.delete(data.participant_id);
      renderPeople();
      if (data.participant_id === app.me) left(data.reason);
      break;
    case 'room.chat':
      addMessage(data);
      break;
    case 'room.updated':
      if (data.title) $('room-title').textContent = data.title;
      break;
    case 'room.closed':
      left('the room was closed');
      break;
    default:
  }
}

function leave() {
  app.leaving = true;
  left('');
}

function left(reason) {
  if ($('left').classList.contains('hidden') === false) return;
  app.leaving = true;
  stopScreen();
  if (app.pc) app.pc.close();
  app.pc = null;
  if (app.ws && app.ws.readyState <= 1) app.ws.close();
  if (app.local) app.local.getTracks().forEach((t) => t.stop());
  app.local = null;
  $('room').classList.add('hidden');
  $('left').classList.remove('hidden');
  const reasons = { kicked: 'You were removed from the room.', room_closed: 'The room was closed.',
    duplicate_identity: 'You joined from another tab.' };
  $('left-reason').textContent = reasons[reason] || (reason ? `Disconnected: ${reason}` : '');
}

// ------------------------------------------------------------------ rendering
function setConnState(state) {
  const pill = $('conn-state');
  pill.textContent = { connected: 'connected', connecting: 'connecting…', new: 'connecting…',
    failed: 'connection failed', disconnected: 'reconnecting…', closed: 'closed' }[state] || state;
  pill.classList.toggle('ok', state === 'connected');
}

function initials(name) {
  return (name || '?').split(/\s+/).map((w) => w[0]).join('').slice(0, 2).toUpperCase();
}

function renderPeople() {
  const list = $('people');
  list.replaceChildren();
  const people = [...app.people.values()].sort((a, b) => (a.participant_id === app.me ? -1 : 0) || a.joined_at - b.joined_at);
  for (const p of people) {
    const li = document.createElement('li');
    const avatar = document.createElement('span');
    avatar.className = 'avatar'; avatar.textContent = initials(p.name);
    const name = document.createElement('span');
    name.className = 'name'; name.textContent = p.name || p.identity;
    if (p.participant_id === app.me) {
      const me = document.createElement('span'); me.className = 'me'; me.textContent = ' (you)'; name.append(me);
    }
    const icons = document.createElement('span');
    icons.className = 'icons';
    for (const [label, off] of [['mic', p.audio_muted], ['cam', p.video_muted]]) {
      const tag = document.createElement('span');
      tag.className = off ? 'tag off' : 'tag';
      tag.textContent = off ? `${label} off` : label;
      icons.append(tag, ' ');
    }
    icons.title = p.kind;
    li.append(avatar, name, icons);
    list.append(li);
  }
  $('people-count').textContent = `${people.length} present`;
}

function renderControls() {
  const set = (id, on, onTitle, offTitle) => {
    const button = $(id);
    button.classList.toggle('off', !on);
    button.title = on ? onTitle : offTitle;
  };
  set('btn-mic', app.micOn, 'Mute microphone', 'Unmute microphone');
  set('btn-cam', app.camOn, 'Turn camera off', 'Turn camera on');
  $('btn-screen').classList.toggle('on', !!app.screenPc);
  $('btn-screen').title = app.screenPc ? 'Stop sharing' : 'Share your screen';
  $('btn-screen').querySelector('.lbl').textContent = app.screenPc ? 'Stop' : 'Share';
}

function addMessage(data) {
  const li = document.createElement('li');
  if (data.sender === app.me) li.classList.add('mine');
  const who = document.createElement('div');
  who.className = 'who';
  who.textContent = `${data.sender === app.me ? 'You' : data.sender_name || 'someone'} · ${new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`;
  const text = document.createElement('div');
  text.className = 'text'; text.textContent = data.text;
  li.append(who, text);
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
  if ($('chat').classList.contains('hidden') && data.sender !== app.me) {
    app.unread += 1;
    $('chat-badge').textContent = app.unread;
    $('chat-badge').classList.remove('hidden');
  }
}

function notice(err) {
  addMessage({ sender: null, sender_name: 'mediagate', text: String(err.message || err) });
}

// ------------------------------------------------------------------ wiring
document.querySelectorAll('.tab').forEach((tab) => tab.addEventListener('click', () => {
  document.querySelectorAll('.tab').forEach((t) => t.classList.toggle('active', t === tab));
  $('people').classList.toggle('hidden', tab.dataset.tab !== 'people');
  $('chat').classList.toggle('hidden', tab.dataset.tab !== 'chat');
  if (tab.dataset.tab === 'chat') { app.unread = 0; $('chat-badge').classList.add('hidden'); $('chat-input').focus(); }
}));
$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  $('chat-input').value = '';
  send({ cmd: 'sendtext', text }).catch(notice);
});
$('btn-mic').addEventListener('click', toggleMic);
$('btn-cam').addEventListener('click', toggleCamera);
$('btn-screen').addEventListener('click', toggleScreen);
$('btn-leave').addEventListener('click', leave);
$('rejoin').addEventListener('click', () => { if (app.token) enter(app.token); else location.reload(); });
window.addEventListener('hashchange', () => {
  const token = fragmentToken();
  if (token && !app.ws) enter(token);
});
lobby();
