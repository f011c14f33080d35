// Run in ComfyUI's web front end by tests/server/test_frontend_e2e.c (Chrome DevTools
// Runtime.evaluate): what a person does, through the front end's own app object. Resolves to a
// JSON string of what was seen.
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const out = {};
  for (let i = 0; i < 900 && !(window.app && window.app.graph && window.LiteGraph && window.app.api); i++) await sleep(100);
  if (!(window.app && window.app.graph)) return JSON.stringify({ error: 'the front end did not start' });
  const api = window.app.api;
  // The node library: every node type of /object_info is registered.
  const defs = await (await fetch(api.apiURL('/object_info'))).json();
  out.node_types = Object.keys(defs).length;
  out.missing = Object.keys(defs).filter((k) => !window.LiteGraph.registered_node_types[k]);
  // Load the default graph, point it at the tiny checkpoint, make it small.
  const dflt = window.comfyAPI && window.comfyAPI.defaultGraph && window.comfyAPI.defaultGraph.defaultGraph;
  if (!dflt) return JSON.stringify({ error: 'no default graph in window.comfyAPI' });
  await window.app.loadGraphData(structuredClone(dflt));
  const g = window.app.graph;
  const nodes = () => g.nodes || g._nodes || [];
  out.default_graph = nodes().map((n) => n.type).sort();
  // The front end's default graph is for a model family sdflow does not run: build ComfyUI's
  // classic text-to-image graph from the node library instead, as a person would.
  g.clear();
  const add = (type) => { const n = window.LiteGraph.createNode(type); g.add(n); return n; };
  const ckpt = add('CheckpointLoaderSimple'), pos = add('CLIPTextEncode'), neg = add('CLIPTextEncode');
  const latent = add('EmptyLatentImage'), ks = add('KSampler'), dec = add('VAEDecode'), save = add('SaveImage');
  ckpt.connect(0, ks, 'model');
  ckpt.connect(1, pos, 'clip');
  ckpt.connect(1, neg, 'clip');
  pos.connect(0, ks, 'positive');
  neg.connect(0, ks, 'negative');
  latent.connect(0, ks, 'latent_image');
  ks.connect(0, dec, 'samples');
  ckpt.connect(2, dec, 'vae');
  dec.connect(0, save, 'images');
  const set = (n, name, v) => { n.widgets.find((w) => w.name === name).value = v; };
  set(ckpt, 'ckpt_name', 'tiny.safetensors');
  set(pos, 'text', 'a cat');
  set(neg, 'text', 'blurry');
  set(latent, 'width', 64);
  set(latent, 'height', 64);
  set(ks, 'steps', 3);
  out.progress = 0;
  out.previews = 0;
  api.addEventListener('progress', () => out.progress++);
  api.addEventListener('b_preview', () => out.previews++);
  const done = new Promise((resolve) => {
    api.addEventListener('executed', (e) => { out.images = e.detail.output.images; });
    api.addEventListener('execution_success', () => resolve('success'));
    api.addEventListener('execution_error', (e) => resolve('error: ' + e.detail.exception_message));
  });
  try {
    const p = await window.app.graphToPrompt();
    out.prompt = Object.values(p.output).map((n) => n.class_type).sort();
    out.queued = await window.app.queuePrompt(0, 1);
    if (!out.queued) { // say why: the server's node_errors
      try { await api.queuePrompt(0, p); } catch (e) { out.error = String(e); }
    }
  } catch (e) {
    return JSON.stringify({ ...out, error: 'queue: ' + e });
  }
  out.result = await Promise.race([done, sleep(120000).then(() => 'timeout')]);
  if (out.images && out.images.length) {
    const im = out.images[0];
    const r = await fetch(api.apiURL('/view?filename=' + encodeURIComponent(im.filename) + '&subfolder=' +
      encodeURIComponent(im.subfolder) + '&type=' + im.type));
    out.view = r.status + ' ' + r.headers.get('content-type');
  }
  // The queue panel's source: the finished job with its preview.
  const jobs = await (await fetch(api.apiURL('/jobs?status=completed,failed&limit=10&offset=0'))).json();
  out.jobs = jobs.jobs.map((j) => j.status + ':' + (j.preview_output ? j.preview_output.filename : ''));
  // A saved workflow goes to userdata and is listed.
  await api.storeUserData('workflows/e2e.json', window.app.graph.serialize());
  out.saved = (await api.listUserDataFullInfo('workflows')).map((f) => f.path);
  return JSON.stringify(out);
})()
