//! The chat page at `/`: a plain HTML page that speaks protocol v1.

/// The page. It asks for a token (`confab token --uid U` prints one), connects
/// with `?token=`, and shows acks, replies and errors as they come.
pub(crate) const CHAT_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>confab chat</title>
<link rel="icon" href="data:,">
<style>
body{font:15px system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
#log{border:1px solid #ccc;height:24rem;overflow:auto;padding:.5rem;white-space:pre-wrap}
.me{color:#035}.bot{color:#060}.sys{color:#888}.err{color:#a00}
input{font:inherit}#text{width:75%}
</style></head><body>
<h1>confab</h1>
<p><input id="token" placeholder="token (confab token --uid alice)" size="60">
<button id="connect">connect</button></p>
<div id="log"></div>
<p><input id="text" placeholder="39码的黑色有货吗？" disabled><button id="send" disabled>send</button></p>
<script>
const log = (cls, text) => { const d = document.createElement('div'); d.className = cls;
  d.textContent = text; const l = document.getElementById('log'); l.appendChild(d); l.scrollTop = l.scrollHeight; };
let ws, n = 0, lastSeq = 0;
document.getElementById('connect').onclick = () => {
  const token = document.getElementById('token').value.trim();
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  ws = new WebSocket(`${proto}://${location.host}/v1/ws?token=${encodeURIComponent(token)}`);
  ws.onopen = () => { document.getElementById('text').disabled = false; document.getElementById('send').disabled = false; };
  ws.onclose = e => log('sys', `closed (${e.code}) ${e.reason}`);
  ws.onmessage = e => { const f = JSON.parse(e.data);
    if (f.type === 'hello') { log('sys', `hello ${f.uid} on ${f.node}, last_seq ${f.last_seq}`);
      if (f.last_seq > lastSeq) ws.send(JSON.stringify({type: 'resume', after_seq: lastSeq})); }
    else if (f.type === 'reply') { lastSeq = Math.max(lastSeq, f.seq);
      log('bot', `${f.text}  [${f.intent} ${JSON.stringify(f.slots)} ${f.policy}]`); }
    else if (f.type === 'error') log('err', `${f.code}: ${f.message}`);
    else if (f.type === 'ack') log('sys', `ack ${f.id} seq ${f.seq}`); };
};
const send = () => { const t = document.getElementById('text'); if (!t.value) return;
  const id = `web-${Date.now()}-${n++}`; log('me', t.value);
  ws.send(JSON.stringify({type: 'say', id, text: t.value})); t.value = ''; };
document.getElementById('send').onclick = send;
document.getElementById('text').onkeydown = e => { if (e.key === 'Enter') send(); };
</script></body></html>
"#;
