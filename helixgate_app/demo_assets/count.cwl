cwlVersion: v1.2
class: CommandLineTool
label: count lines
requirements:
  DockerRequirement: {dockerPull: "@IMAGE@"}
  ResourceRequirement: {coresMax: 1, ramMax: 128}
baseCommand: [sh, -c, 'wc -l < "$0" | tr -d " "']
inputs:
  src:
    type: File
    inputBinding: {position: 1}
outputs:
  out: {type: stdout}
stdout: count.txt
