import {
  parseSubmitMarker,
  renderArrayLine,
  renderSubmitMarker,
  withoutArray,
} from '../../src/compute/submit-marker.js';

const AT = new Date('2026-12-01T10:00:00.000Z');

describe('the submit marker', () => {
  it('holds the time, the notes on a line each, and the array the driver adds', () => {
    const text =
      renderSubmitMarker(AT, ['disk_gb ignored', 'a note\nthat spans\r\nlines']) +
      renderArrayLine('tes_array_0123456789ab', 7);
    expect(text).toBe(
      '2026-12-01T10:00:00.000Z\n' +
        'note disk_gb ignored\n' +
        'note a note that spans lines\n' +
        'array tes_array_0123456789ab 7\n',
    );
    expect(parseSubmitMarker(text)).toEqual({
      notes: ['disk_gb ignored', 'a note that spans lines'],
      array: { name: 'tes_array_0123456789ab', index: 7 },
    });
  });

  it('lets no note pass for an array line', () => {
    const text = renderSubmitMarker(AT, ['array tes_array_0123456789ab 3']);
    expect(parseSubmitMarker(text)).toEqual({ notes: ['array tes_array_0123456789ab 3'] });
  });

  it('reads the notes of an older gateway, which had no prefix', () => {
    expect(parseSubmitMarker('2026-12-01T10:00:00.000Z\nfirst note\nsecond note\n')).toEqual({
      notes: ['first note', 'second note'],
    });
    expect(parseSubmitMarker('')).toEqual({ notes: [] });
  });

  it('names no array once the refused array line is dropped, and keeps the rest', () => {
    const text = renderSubmitMarker(AT, ['kept']) + renderArrayLine('tes_array_0123456789ab', 0);
    const dropped = withoutArray(text);
    expect(dropped).toBe('2026-12-01T10:00:00.000Z\nnote kept\n');
    expect(parseSubmitMarker(dropped)).toEqual({ notes: ['kept'] });
  });

  it('ignores an array line of another shape', () => {
    const text = `${AT.toISOString()}\narray tes_array_x seven\n`;
    expect(parseSubmitMarker(text)).toEqual({ notes: [] });
  });
});
