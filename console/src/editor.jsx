// CodeMirror 6 in a Preact component: JavaScript or Python highlighting,
// the dark theme when the system is dark, and a diff view for versions.
import { useEffect, useRef } from "preact/hooks";
import { basicSetup, EditorView } from "codemirror";
import { EditorState } from "@codemirror/state";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import { HighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { tags as t } from "@lezer/highlight";
import { oneDarkTheme } from "@codemirror/theme-one-dark";
import { MergeView } from "@codemirror/merge";

// The page's nonce lets CodeMirror's <style> elements past the CSP.
const nonce = document.querySelector('meta[name="csp-nonce"]')?.content ?? "";
// One Dark's frame with brighter token colours: its own comments and
// punctuation fall under WCAG's 4.5:1 on its background (axe checks).
const darkHighlight = HighlightStyle.define([
  { tag: [t.keyword, t.operatorKeyword, t.modifier, t.controlKeyword], color: "#e7a6ff" },
  { tag: [t.string, t.special(t.string), t.regexp], color: "#b5e38f" },
  { tag: [t.comment, t.lineComment, t.blockComment], color: "#b4bccb", fontStyle: "italic" },
  { tag: [t.number, t.bool, t.null, t.atom], color: "#f8c38b" },
  {
    tag: [t.function(t.variableName), t.function(t.propertyName), t.definition(t.function(t.variableName))],
    color: "#8fd0ff",
  },
  { tag: [t.propertyName, t.attributeName], color: "#ffd68a" },
  { tag: [t.typeName, t.className, t.namespace], color: "#ffe08a" },
  { tag: [t.variableName, t.definition(t.variableName), t.self], color: "#f0ede8" },
  { tag: [t.operator, t.punctuation, t.bracket, t.separator], color: "#d7dce4" },
  { tag: t.invalid, color: "#ff9e9e" },
]);

const dark = () => window.matchMedia?.("(prefers-color-scheme: dark)").matches;

function extensions(language, label, readOnly) {
  const list = [
    basicSetup,
    EditorView.contentAttributes.of({ "aria-label": label }),
    EditorView.lineWrapping,
    EditorView.cspNonce.of(nonce),
  ];
  if (language === "python") list.push(python());
  else if (language === "javascript") list.push(javascript());
  if (dark()) list.push(oneDarkTheme, syntaxHighlighting(darkHighlight));
  if (readOnly) list.push(EditorState.readOnly.of(true), EditorView.editable.of(false));
  return list;
}

/**
 * An editor that starts with `value`; each change goes to `onChange`. It
 * owns its text from then on (a parent that replaces the text gives it a
 * new `key`): feeding every change back in as `value` races the editor.
 */
export function CodeEditor({ value, language, onChange, label = "Code", readOnly = false }) {
  const host = useRef(null);
  const view = useRef(null);
  const changed = useRef(onChange);
  changed.current = onChange;
  useEffect(() => {
    view.current = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: value ?? "",
        extensions: [
          ...extensions(language, label, readOnly),
          EditorView.updateListener.of((u) => {
            if (u.docChanged) changed.current?.(u.state.doc.toString());
          }),
        ],
      }),
    });
    return () => view.current.destroy();
  }, [language, readOnly]);
  return <div class="editor" ref={host} data-testid="editor" />;
}

/** Two texts side by side with their differences marked. */
export function DiffView({ before, after, language }) {
  const host = useRef(null);
  useEffect(() => {
    const view = new MergeView({
      parent: host.current,
      a: { doc: before, extensions: extensions(language, "Older version", true) },
      b: { doc: after, extensions: extensions(language, "Current version", true) },
    });
    return () => view.destroy();
  }, [before, after, language]);
  return <div class="editor diff" ref={host} data-testid="diff" />;
}
