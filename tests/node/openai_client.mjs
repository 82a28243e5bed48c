// The official `openai` npm client, unmodified, against a live msoa gateway.
// Usage: node openai_client.mjs BASE_URL   (e.g. http://127.0.0.1:8080/v1)
// Prints one line per check and exits non-zero if any failed.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'unused', maxRetries: 0, timeout: 10000 });
let failures = 0;
const check = (name, ok, detail = '') => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : ' ' + detail}`);
  if (!ok) failures++;
};

const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check('models.list includes auto and mock-small', ids.includes('auto') && ids.includes('mock-small'), JSON.stringify(ids));

const done = await client.chat.completions.create({
  model: 'mock-small',
  messages: [{ role: 'user', content: 'hello from the openai client' }],
});
check('completion has content', typeof done.choices[0].message.content === 'string' && done.choices[0].message.content.length > 0);
check('completion has usage', done.usage && done.usage.completion_tokens === 5, JSON.stringify(done.usage));
check('completion has the msoa report', done.msoa && done.msoa.node === 'm1', JSON.stringify(done.msoa));

const { data: raw, response } = await client.chat.completions
  .create({ model: 'auto', messages: [{ role: 'user', content: 'hi' }] })
  .withResponse();
check('x-msoa-node header', response.headers.get('x-msoa-node') === 'm1');
check('auto model answered', raw.choices.length === 1);

const stream = await client.chat.completions.create({
  model: 'mock-small',
  messages: [{ role: 'user', content: 'stream to me' }],
  stream: true,
  stream_options: { include_usage: true },
});
let text = '';
let ids2 = new Set();
let finish = null;
let usage = null;
let report = null;
for await (const chunk of stream) {
  ids2.add(chunk.id);
  if (chunk.choices.length) {
    text += chunk.choices[0].delta.content ?? '';
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
  if (chunk.msoa) report = chunk.msoa;
}
check('stream text', text.includes('tok'), text);
check('stream has one id', ids2.size === 1, [...ids2].join(','));
check('stream finish_reason', finish === 'stop');
check('stream usage chunk', usage && usage.completion_tokens === 5, JSON.stringify(usage));
check('stream msoa report', report && report.node === 'm1' && report.tokens_out === 5, JSON.stringify(report));

try {
  await client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] });
  check('unknown model raises NotFoundError', false, 'no error');
} catch (e) {
  check('unknown model raises NotFoundError', e instanceof OpenAI.NotFoundError && e.code === 'model_not_found', String(e));
}

try {
  await client.chat.completions.create({ model: 'mock-small', messages: [] });
  check('empty messages raises BadRequestError', false, 'no error');
} catch (e) {
  check('empty messages raises BadRequestError', e instanceof OpenAI.BadRequestError, String(e));
}

console.log(failures ? `${failures} checks failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
