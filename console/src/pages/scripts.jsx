import { useRef, useState } from "preact/hooks";
import { ApiFailure, call, can, get, mayChange, post, raw } from "../api.js";
import { CodeEditor, DiffView } from "../editor.jsx";
import {
  ago,
  Empty,
  ErrorBox,
  Field,
  href,
  Loading,
  navigate,
  Status,
  useLoad,
  when,
  Table,
  deleteAfterAsking,
} from "../ui.jsx";
import { RunPanel } from "./run.jsx";
import { ConfigPanel } from "./config.jsx";

const TEMPLATES = {
  javascript: `// main receives the parameters; what it returns is the result.
export default function main(params) {
  console.log("hello from Kiln");
  return { greeting: \`hello, \${params.name ?? "world"}\` };
}
`,
  python: `# main receives the parameters; what it returns is the result.
def main(params):
    print("hello from Kiln")
    return {"greeting": f"hello, {params.get('name', 'world')}"}
`,
};

export function ScriptList({ query }) {
  const search = query.get("search") ?? "";
  const language = query.get("language") ?? "";
  const status = query.get("status") ?? "";
  const page = Number(query.get("page") ?? 1);
  const [typed, setTyped] = useState(search);
  const list = useLoad(
    () => get("/v1/scripts", { search, language, status, page, size: 20, sort: "updated_at", order: "desc" }),
    [search, language, status, page],
  );
  const filter = (change) => navigate("/scripts", { search, language, status, ...change, page: undefined });
  return (
    <section>
      <div class="title">
        <h1>Scripts</h1>
        {can("write:scripts") && (
          <a class="button" href="#/scripts/new">
            New script
          </a>
        )}
      </div>
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          filter({ search: typed });
        }}
      >
        <Field label="Search" id="script-search">
          <input id="script-search" type="search" value={typed} onInput={(e) => setTyped(e.currentTarget.value)} />
        </Field>
        <Field label="Language" id="script-language">
          <select id="script-language" value={language} onChange={(e) => filter({ language: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="javascript">JavaScript</option>
            <option value="python">Python</option>
            <option value="wasm">WebAssembly</option>
          </select>
        </Field>
        <Field label="Status" id="script-status">
          <select id="script-status" value={status} onChange={(e) => filter({ status: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="active">active</option>
            <option value="draft">draft</option>
            <option value="archived">archived</option>
          </select>
        </Field>
        <button type="submit" class="secondary">
          Search
        </button>
      </form>
      <ErrorBox error={list.error} />
      {list.loading && !list.data && <Loading />}
      {list.data && list.data.data.length === 0 && (
        <Empty title={search || language || status ? "No script matches." : "No scripts yet."}>
          {can("write:scripts") ? (
            <a href="#/scripts/new">Write one in the editor, or upload a .wasm component.</a>
          ) : (
            "A developer or admin can add one."
          )}
        </Empty>
      )}
      {list.data && list.data.data.length > 0 && (
        <Table
          columns={["Name", "Language", "Version", "Status", "Runs", "Updated"]}
          pagination={list.data.pagination}
          go={(p) => navigate("/scripts", { search, language, status, page: p })}
        >
          {list.data.data.map((s) => (
            <tr>
              <td>
                <a href={`#/scripts/${encodeURIComponent(s.name)}`}>{s.name}</a>
                {s.description && <div class="muted small">{s.description}</div>}
              </td>
              <td>{s.language}</td>
              <td>{s.version}</td>
              <td>
                <Status status={s.status} />
              </td>
              <td>{s.execution_count}</td>
              <td title={when(s.updated_at)}>{ago(s.updated_at)}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}

/**
 * Stores a new version of script `id` only if its current version is still
 * `version`, the one the user started from: another user's save (or a
 * `kiln deploy`) in between is a conflict, not lost. `If-Match` makes the
 * check and the write one step on the node.
 */
async function saveOver(id, version, body) {
  const path = `/v1/scripts/${encodeURIComponent(id)}`;
  const response = await raw("GET", path);
  const now = await response.json();
  if (now.version !== version) {
    throw new ApiFailure(
      409,
      "CONFLICT",
      `version ${now.version} was saved since you opened version ${version}: reload the page to see it`,
      response.headers.get("x-request-id") ?? "",
    );
  }
  return call("PUT", path, { body, headers: { "if-match": response.headers.get("etag") } });
}

function base64(buffer) {
  let s = "";
  const bytes = new Uint8Array(buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function NewScript() {
  const [name, setName] = useState("");
  const [language, setLanguage] = useState("javascript");
  const [description, setDescription] = useState("");
  const [code, setCode] = useState(TEMPLATES.javascript);
  const [file, setFile] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (!can("write:scripts")) return <Empty title="Your role cannot create scripts." />;
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = { name, language, description: description || undefined };
      if (language === "wasm") {
        if (!file) throw { message: "Choose a .wasm component to upload.", code: "VALIDATION_ERROR" };
        body.content_base64 = base64(await file.arrayBuffer());
      } else body.content = code;
      const script = await post("/v1/scripts", body);
      navigate(`/scripts/${encodeURIComponent(script.name)}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }
  return (
    <section>
      <h1>New script</h1>
      <form onSubmit={submit} class="stack">
        <ErrorBox error={error} />
        <div class="row">
          <Field label="Name" id="new-name" hint="Letters, digits, _ . and -; unique on this node.">
            <input
              id="new-name"
              required
              pattern="[a-zA-Z0-9_.\-]{1,255}"
              aria-describedby="new-name-hint"
              value={name}
              onInput={(e) => setName(e.currentTarget.value)}
            />
          </Field>
          <Field label="Language" id="new-language">
            <select
              id="new-language"
              value={language}
              onChange={(e) => {
                const next = e.currentTarget.value;
                if (TEMPLATES[language] === code && TEMPLATES[next]) setCode(TEMPLATES[next]);
                setLanguage(next);
              }}
            >
              <option value="javascript">JavaScript</option>
              <option value="python">Python</option>
              <option value="wasm">WebAssembly component (.wasm)</option>
            </select>
          </Field>
        </div>
        <Field label="Description" id="new-description">
          <input id="new-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        </Field>
        {language === "wasm" ? (
          <Field label="Component" id="new-file" hint="A WASI component (.wasm), up to the node's body limit.">
            <input
              id="new-file"
              type="file"
              accept=".wasm,application/wasm"
              aria-describedby="new-file-hint"
              onChange={(e) => setFile(e.currentTarget.files[0] ?? null)}
            />
          </Field>
        ) : (
          <div class="field">
            <span class="label">Code</span>
            <CodeEditor key={language} value={code} language={language} onChange={setCode} label="Script code" />
          </div>
        )}
        <div>
          <button type="submit" disabled={busy}>
            {busy ? "Checking and saving…" : "Create script"}
          </button>
        </div>
      </form>
    </section>
  );
}

const TABS = [
  ["code", "Code"],
  ["run", "Run"],
  ["versions", "Versions"],
  ["config", "Config"],
];

export function ScriptPage({ id, tab }) {
  const script = useLoad(() => get(`/v1/scripts/${encodeURIComponent(id)}`), [id]);
  const [error, setError] = useState(null);
  if (script.error) return <ErrorBox error={script.error} />;
  if (!script.data) return <Loading />;
  const s = script.data;
  const path = `/scripts/${encodeURIComponent(s.name)}`;
  const remove = () =>
    deleteAfterAsking(
      `Delete ${s.name} and its versions?`,
      `/v1/scripts/${s.id}`,
      () => navigate("/scripts"),
      setError,
    );
  return (
    <section>
      <div class="title">
        <div>
          <h1>{s.name}</h1>
          <p class="muted small">
            {s.language} · version {s.version} · <Status status={s.status} /> · {s.size_bytes} bytes · updated{" "}
            {ago(s.updated_at)} · <a href={href("/executions", { script_id: s.id })}>its executions</a>
          </p>
          {s.description && <p>{s.description}</p>}
        </div>
        {mayChange(s) && (
          <button type="button" class="danger" onClick={remove}>
            Delete
          </button>
        )}
      </div>
      <ErrorBox error={error} />
      <nav class="tabs" aria-label="Script">
        {TABS.map(([key, label]) => (
          <a href={`#${path}/${key}`} aria-current={tab === key ? "page" : undefined}>
            {label}
          </a>
        ))}
      </nav>
      {tab === "code" && <CodeTab script={s} reload={script.reload} />}
      {tab === "run" && <RunPanel script={s} />}
      {tab === "versions" && <VersionsTab script={s} reload={script.reload} />}
      {tab === "config" && <ConfigPanel script={s} reload={script.reload} />}
    </section>
  );
}

function CodeTab({ script, reload }) {
  const current = useLoad(
    () => get(`/v1/scripts/${script.id}/versions/${script.version}`),
    [script.id, script.version],
  );
  const [code, setCode] = useState(null);
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(null);
  if (current.error) return <ErrorBox error={current.error} />;
  if (!current.data) return <Loading />;
  const v = current.data;
  if (v.content == null) {
    return (
      <Empty title={v.files ? "A bundle of several files." : "A compiled component."}>
        {v.files
          ? `Its entry is ${v.entry}; deploy a new bundle with kiln deploy.`
          : `${v.size_bytes} bytes, hash ${v.content_hash.slice(0, 16)}…; upload a new one with PUT /v1/scripts/${script.name}.`}
      </Empty>
    );
  }
  const text = code ?? v.content;
  const writable = mayChange(script);
  async function save() {
    setError(null);
    try {
      const next = await saveOver(script.id, v.version, { content: text });
      setSaved(next.version);
      setCode(null);
      reload();
    } catch (err) {
      setError(err);
    }
  }
  return (
    <div class="stack">
      <ErrorBox error={error} />
      {saved && (
        <p class="ok" role="status">
          Saved as version {saved}.
        </p>
      )}
      <CodeEditor
        key={`${script.id}@${v.version}`}
        value={v.content}
        language={script.language}
        onChange={setCode}
        readOnly={!writable}
        label={`Code of ${script.name}`}
      />
      {writable && (
        <div>
          <button type="button" onClick={save} disabled={code === null || code === v.content}>
            Save as a new version
          </button>
        </div>
      )}
    </div>
  );
}

function VersionsTab({ script, reload }) {
  const [page, setPage] = useState(1);
  const versions = useLoad(
    () => get(`/v1/scripts/${script.id}/versions`, { page, size: 50 }),
    [script.id, script.version, page],
  );
  const [pair, setPair] = useState(null);
  const [error, setError] = useState(null);
  const asked = useRef(0);
  async function compare(version) {
    setError(null);
    // Only the last comparison asked for is shown, whatever order they end in.
    const turn = ++asked.current;
    try {
      const [old, now] = await Promise.all([
        get(`/v1/scripts/${script.id}/versions/${version}`),
        get(`/v1/scripts/${script.id}`).then((s) => get(`/v1/scripts/${script.id}/versions/${s.version}`)),
      ]);
      if (turn === asked.current) setPair({ old, now });
    } catch (err) {
      if (turn === asked.current) setError(err);
    }
  }
  async function rollback(old) {
    setError(null);
    try {
      const body =
        old.content != null
          ? { content: old.content }
          : old.files
            ? { files: old.files, entry: old.entry }
            : { content_base64: old.content_base64 };
      await saveOver(script.id, pair.now.version, body);
      setPair(null);
      reload();
      versions.reload();
    } catch (err) {
      setError(err);
    }
  }
  if (versions.error) return <ErrorBox error={versions.error} />;
  if (!versions.data) return <Loading />;
  return (
    <div class="stack">
      <ErrorBox error={error} />
      <Table columns={["Version", "Created", "Size", "Hash", ""]} pagination={versions.data.pagination} go={setPage}>
        {versions.data.data.map((v) => (
          <tr>
            <td>
              {v.version} {v.current && <span class="badge">current</span>}
            </td>
            <td>{when(v.created_at)}</td>
            <td>{v.size_bytes}</td>
            <td>
              <code>{v.content_hash.slice(0, 12)}</code>
            </td>
            <td>
              {!v.current && (
                <button type="button" class="secondary" onClick={() => compare(v.version)}>
                  Compare with current
                </button>
              )}
            </td>
          </tr>
        ))}
      </Table>
      {pair && (
        <div class="stack">
          <h2>
            Version {pair.old.version} → version {pair.now.version}
          </h2>
          {pair.old.content != null && pair.now.content != null ? (
            <DiffView before={pair.old.content} after={pair.now.content} language={script.language} />
          ) : (
            <p class="muted">Components and bundles are compared by hash only.</p>
          )}
          {mayChange(script) && (
            <div>
              <button type="button" onClick={() => rollback(pair.old)}>
                Roll back to version {pair.old.version}
              </button>
              <p class="hint">A rollback stores version {pair.old.version}'s content as a new version.</p>
            </div>
          )}
        </div>
      )}
    </div>
  );
}
