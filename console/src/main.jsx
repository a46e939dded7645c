// The console: a hash router over pages that use only the public API.
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { can, currentSession, logout, onSession } from "./api.js";
import { Login } from "./pages/login.jsx";
import { ScriptList, NewScript, ScriptPage } from "./pages/scripts.jsx";
import { ExecutionList, ExecutionPage } from "./pages/executions.jsx";
import { Schedules } from "./pages/schedules.jsx";
import { Keys } from "./pages/keys.jsx";
import { Users } from "./pages/users.jsx";
import { Secrets } from "./pages/secrets.jsx";
import { Webhooks } from "./pages/webhooks.jsx";
import { Dashboard } from "./pages/dashboard.jsx";
import { Account } from "./pages/account.jsx";
import { Empty } from "./ui.jsx";

/** A path segment as written; a malformed escape is kept as it is. */
function decoded(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decoded), query: new URLSearchParams(query) };
}

const NAV = [
  ["", "Dashboard", null],
  ["scripts", "Scripts", "read:scripts"],
  ["executions", "Executions", "read:executions"],
  ["schedules", "Schedules", "manage:schedules"],
  ["webhooks", "Webhooks", "manage:webhooks"],
  ["secrets", "Secrets", "admin"],
  ["keys", "API keys", null],
  ["users", "Users", "admin"],
  ["account", "Account", null],
];

function Page({ route }) {
  const [first, second, third] = route.parts;
  const q = route.query;
  switch (first) {
    case undefined:
      return <Dashboard />;
    case "scripts":
      if (second === "new") return <NewScript />;
      // Keyed by id: another script's page starts with nothing of this one's.
      if (second) return <ScriptPage key={second} id={second} tab={third ?? "code"} />;
      return <ScriptList query={q} />;
    case "executions":
      if (second) return <ExecutionPage key={second} id={second} />;
      // Keyed by its filters: back and forward refill the form.
      return <ExecutionList key={q.toString()} query={q} />;
    case "schedules":
      return <Schedules />;
    case "webhooks":
      return <Webhooks key={second} id={second} />;
    case "keys":
      return <Keys />;
    case "users":
      return <Users />;
    case "secrets":
      return <Secrets />;
    case "account":
      return <Account />;
    default:
      return (
        <Empty title="No such page">
          <a href="#/">Back to the dashboard</a>
        </Empty>
      );
  }
}

function App() {
  const [session, setSession] = useState(currentSession());
  const [route, setRoute] = useState(parseHash());
  const [menu, setMenu] = useState(false);
  useEffect(() => onSession(setSession), []);
  const main = useRef(null);
  useEffect(() => {
    const moved = () => {
      setRoute(parseHash());
      setMenu(false);
      // A new page is announced: its name in the title, focus at its start.
      main.current?.focus();
    };
    window.addEventListener("hashchange", moved);
    return () => window.removeEventListener("hashchange", moved);
  }, []);
  const here = route.parts[0] ?? "";
  useEffect(() => {
    const page = NAV.find(([path]) => path === here)?.[1];
    document.title = session ? `${page ?? "Not found"} · Kiln` : "Sign in · Kiln";
  }, [here, session]);
  if (!session) return <Login />;
  return (
    <div class="layout">
      <header class="top">
        <a class="brand" href="#/">
          <img src="/assets/favicon.svg" alt="" width="22" height="22" /> Kiln
        </a>
        <button
          type="button"
          class="menu-toggle secondary"
          aria-expanded={menu}
          aria-controls="nav"
          onClick={() => setMenu(!menu)}
        >
          Menu
        </button>
        <nav id="nav" class={menu ? "open" : ""} aria-label="Main">
          {NAV.filter(([, , scope]) => !scope || can(scope)).map(([path, label]) => (
            <a href={`#/${path}`} aria-current={here === path ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <div class="who">
          <span class="muted small" data-testid="whoami">
            {session.username} ({session.role})
          </span>
          <button type="button" class="secondary" onClick={() => logout()}>
            Log out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1} ref={main}>
        <Page route={route} />
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app"));
